"""Seeding: many stakers, set-based, leaving the ledger exactly as real stakes would."""

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.db.models import Count, Sum

from challenges.models import Challenge, Stake
from ledger.models import Account, Transfer
from ledger.selectors import ledger_check
from proof.seeding import SEED_PASSWORD, challenge_seed

pytestmark = pytest.mark.django_db


def test_seeding_creates_users_wallets_stakes_and_balanced_transfers():
    # When a challenge is seeded with 1,000 stakers, 30% on yes
    challenge = challenge_seed(stakers=1000, yes_share=0.3, min_amount=5, max_amount=50, seed=7)
    # Then the stakes and the challenge totals agree
    stakes = Stake.objects.filter(challenge=challenge)
    per_side = {
        row["side"]: (row["n"], row["total"])
        for row in stakes.values("side").annotate(n=Count("id"), total=Sum("amount"))
    }
    assert (
        per_side["yes"] == (challenge.yes_count, challenge.yes_total) == (300, per_side["yes"][1])
    )
    assert per_side["no"] == (challenge.no_count, challenge.no_total)
    assert challenge.no_count == 700
    assert all(5 <= a <= 50 for a in stakes.values_list("amount", flat=True))
    assert challenge.status == Challenge.Status.PENDING_ADMIN
    # And each stake has its transfer wallet -> escrow under the stake key
    keys = set(Transfer.objects.filter(kind="stake").values_list("idempotency_key", flat=True))
    assert keys == {f"stake:{pk}" for pk in stakes.values_list("pk", flat=True)}
    # And the escrow holds every stake, wallets are back at 0, and the ledger balances
    escrow = Account.objects.get(pk=challenge.escrow_id)
    assert escrow.balance == challenge.yes_total + challenge.no_total
    wallets = Account.objects.filter(kind="user_wallet", user__in=stakes.values("user_id"))
    assert wallets.count() == 1000
    assert set(wallets.values_list("balance", flat=True)) == {0}
    assert ledger_check().ok
    # And a seeded user can log in
    first = get_user_model().objects.get(pk=challenge.challenger_id)
    assert authenticate(username=first.username, password=SEED_PASSWORD) == first


def test_same_seed_same_amounts():
    a = challenge_seed(stakers=50, seed=3)
    b = challenge_seed(stakers=50, seed=3)
    amounts = [
        list(Stake.objects.filter(challenge=c).order_by("id").values_list("amount", flat=True))
        for c in (a, b)
    ]
    assert amounts[0] == amounts[1]
