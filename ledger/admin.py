"""The ledger in the admin, read-only: rows that only the posting service writes."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from ledger.models import Account, Deposit, Transfer


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "user", "currency", "balance", "created_at"]
    # Not the currency: a filter offering every currency reads every account to list them.
    list_filter = ["kind"]
    search_fields = ["=id", "user__username"]
    list_select_related = ["user"]


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "amount",
        "debit_account",
        "credit_account",
        "idempotency_key",
        "created_at",
    ]
    list_filter = ["kind"]
    search_fields = ["=idempotency_key", "=debit_account__id", "=credit_account__id"]
    list_select_related = ["debit_account", "credit_account"]


@admin.register(Deposit)
class DepositAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "amount", "actor", "idempotency_key", "created_at"]
    search_fields = ["=idempotency_key", "user__username", "actor__username"]
    list_select_related = ["user", "actor"]
    raw_id_fields = ["user", "actor", "transfer"]
