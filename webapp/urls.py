from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, path
from django.views.generic import RedirectView

from webapp.api import api
from webapp.views import batches, jobs, tokens, usage, webhooks


def slashed(route: str, name: str) -> URLPattern:
    """`route/` sends to `route`: a page typed or linked with a trailing slash still opens."""
    return path(f"{route}/", RedirectView.as_view(pattern_name=name, query_string=True))


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="auth/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("", jobs.job_list, name="job_list"),
    path("jobs", RedirectView.as_view(pattern_name="job_list", query_string=True)),
    path("jobs/live", jobs.job_list_live, name="job_list_live"),
    path("jobs/events", jobs.job_list_events, name="job_list_events"),
    path("jobs/new", jobs.job_new, name="job_new"),
    slashed("jobs/new", "job_new"),
    path("jobs/<uuid:job_id>", jobs.job_detail, name="job_detail"),
    path("jobs/<uuid:job_id>/live", jobs.job_detail_live, name="job_detail_live"),
    path("jobs/<uuid:job_id>/cancel", jobs.job_cancel, name="job_cancel"),
    path("jobs/<uuid:job_id>/rerun", jobs.job_rerun, name="job_rerun"),
    path("batches", batches.batch_list, name="batch_list"),
    slashed("batches", "batch_list"),
    path("batches/live", batches.batch_list_live, name="batch_list_live"),
    path("batches/new", batches.batch_new, name="batch_new"),
    slashed("batches/new", "batch_new"),
    path("batches/preview", batches.batch_preview, name="batch_preview"),
    path("batches/<uuid:batch_id>", batches.batch_detail, name="batch_detail"),
    path("batches/<uuid:batch_id>/live", batches.batch_detail_live, name="batch_detail_live"),
    path("batches/<uuid:batch_id>/cancel", batches.batch_cancel, name="batch_cancel"),
    path("batches/<uuid:batch_id>/rerun", batches.batch_rerun, name="batch_rerun"),
    path(
        "batches/<uuid:batch_id>/results.<str:file_format>",
        batches.batch_results,
        name="batch_results",
    ),
    path("usage", usage.usage, name="usage"),
    slashed("usage", "usage"),
    path("tokens", tokens.token_list, name="tokens"),
    slashed("tokens", "tokens"),
    path("tokens/<int:token_id>/revoke", tokens.token_revoke, name="token_revoke"),
    path("webhooks", webhooks.webhook_list, name="webhooks"),
    slashed("webhooks", "webhooks"),
    path("webhooks/live", webhooks.webhook_list_live, name="webhooks_live"),
    path("webhooks/secret/rotate", webhooks.webhook_secret_rotate, name="webhook_secret_rotate"),
    path(
        "webhooks/deliveries/<str:delivery_id>/redeliver",
        webhooks.delivery_redeliver,
        name="delivery_redeliver",
    ),
]
