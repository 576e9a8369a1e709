"""API tokens: create (the secret shown once), list, revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from jobs import selectors
from jobs.tokens import api_token_create, api_token_revoke
from webapp.forms import TokenForm

# The secret of a token just created, kept for the page the POST redirects to. Only a digest
# is stored with the token, so the secret has to cross the redirect somehow: in the URL it
# would land in history, logs and Referer headers, and a cookie of its own would sit in the
# browser. The session is kept server-side (the database backend), holds it only between
# the POST and the next GET of the page, which pops it, so a reload shows it no more.
NEW_TOKEN_SESSION_KEY = "aijobs_new_api_token"


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The tokens; a POST creates one and redirects (so a reload creates no other) to this
    page, which then shows the new secret once."""
    form = TokenForm(request.POST) if request.method == "POST" else TokenForm()
    if form.is_valid():
        token, raw = api_token_create(user=request.user, name=form.cleaned_data["name"])
        request.session[NEW_TOKEN_SESSION_KEY] = {"name": token.name, "raw": raw}
        return redirect("tokens")
    context = {
        "form": form,
        "created": request.session.pop(NEW_TOKEN_SESSION_KEY, None),
        "tokens": selectors.api_token_list(user=request.user),
        "api_base": request.build_absolute_uri("/api/v1"),
    }
    return render(request, "tokens/list.html", context)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = selectors.api_token_get(user=request.user, token_id=token_id)
    if token is None:
        raise Http404("no such token")
    api_token_revoke(token=token)
    messages.success(request, f"Token “{token.name}” revoked: requests using it now get 401.")
    return redirect("tokens")
