from __future__ import annotations

from django.contrib import admin

from jobs.models import ApiToken, BudgetLedger, Job, ProviderCall, UserLimits


class ProviderCallInline(admin.TabularInline):
    model = ProviderCall
    extra = 0
    can_delete = False
    fields = (
        "attempt",
        "seq",
        "outcome",
        "error_code",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
    )
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "kind", "status", "model", "attempts", "cost_usd", "created_at")
    list_filter = ("status", "kind", "model")
    search_fields = ("id", "owner__username", "idempotency_key")
    readonly_fields = (
        "id",
        "created_at",
        "started_at",
        "finished_at",
        "request_fingerprint",
        "rerun_of",
    )
    inlines = (ProviderCallInline,)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "digest", "created_at", "last_used_at")


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = ("user", "submissions_per_minute", "max_running", "budget_usd", "budget_period")
    search_fields = ("user__username",)


@admin.register(BudgetLedger)
class BudgetLedgerAdmin(admin.ModelAdmin):
    list_display = ("user", "period_start", "spent_usd", "reserved_usd")
    list_filter = ("period_start",)
    readonly_fields = ("user", "period_start", "spent_usd", "reserved_usd")
