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


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The tokens; a POST creates one and shows its secret in this response only.

    The secret is never stored (only its digest is), so it is rendered straight from the POST
    rather than carried through a redirect in the session or a cookie.
    """
    form = TokenForm(request.POST) if request.method == "POST" else TokenForm()
    created = None
    if form.is_valid():
        token, raw = api_token_create(user=request.user, name=form.cleaned_data["name"])
        created = {"token": token, "raw": raw}
        form = TokenForm()
    context = {
        "form": form,
        "created": created,
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
