"""Challenge lifecycle: creating challenges, staking, the deadline sweep and deadline warnings.

Lifecycle (DESIGN.md section 1)::

    pending --(both sides staked)--> active --(deadline, sweep)--> pending_admin --> ...
    pending --(deadline, sweep: nobody to play against)--> cancelled (refunded by the payout engine)

The sweep and the warnings run from beat every minute. Both are set-based: a fixed number of
statements whatever the number of challenges and participants, with nothing looped over in
Python. Both are safe to run twice at once: the sweep's ``UPDATE ... WHERE status IN (open)``
re-checks each row after the row lock and its notifications have a unique ``dedup_key`` that
``ON CONFLICT DO NOTHING`` honours; the warnings lock and record whom they told
(``DeadlineWarning``).
"""

import json
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from challenges.models import Challenge, Stake
from challenges.signals import challenges_cancelled
from core.db import advisory_xact_lock, columns_sql, prepared_cursor, row_model
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.money import MAX_AMOUNT
from core.permissions import staff_action_allowed
from core.services import audit_record
from ledger.models import Account, Transfer
from ledger.selectors import WALLET_ID_SQL, wallet_missing
from ledger.services import account_create, posting_ctes, posting_errors
from notifications.services import notifications_insert_select, staff_event_publish_on_commit

User = get_user_model()

# --- Deadline warning policy -------------------------------------------------------------------
# Beat runs the warning scan every minute, and a scan may run late or be skipped, so each
# warning has a window rather than an instant; whichever scan first finds a challenge inside a
# window sends that warning (once per user and challenge, by its ``DeadlineWarning`` mark):
#
#   * 10-minute warning (high priority): while 0 < time left <= 10 minutes. It is never
#     suppressed: everyone who is a participant before the deadline gets it, however late they
#     joined and whatever was sent before.
#   * 1-hour warning: while 40 minutes < time left <= 60 minutes. It is not sent once 40 minutes
#     or less remain, because the 10-minute warning (sent at 10 minutes or less) would then follow
#     within 30 minutes. This is how "never two deadline warnings within 30 minutes" holds without
#     ever dropping the 10-minute warning: any 1-hour warning precedes the 10-minute one by more
#     than 30 minutes by construction.
#
# So a challenge created 15 minutes before its deadline gets only the 10-minute warning, and one
# whose deadline is 5 minutes away when a user joins still gives that user the 10-minute warning.
# The windows are 10 and 20 minutes wide: up to 9 (resp. 19) consecutive missed beats lose nothing.
WARNING_10M_WINDOW = timedelta(minutes=10)
WARNING_1H_WINDOW = timedelta(minutes=60)
WARNING_MIN_GAP = timedelta(minutes=30)
WARNING_1H_CLOSES = WARNING_10M_WINDOW + WARNING_MIN_GAP  # 40 minutes before the deadline


def challenge_create(
    *,
    creator: Any,
    title: str,
    due_date: datetime,
    description: str = "",
    category: str = "",
    challenged_username: str | None = None,
) -> Challenge:
    """Create a ``pending`` challenge with its own empty escrow account; the creator is the
    challenger (side ``yes``).

    Refuses a ``due_date`` that is not in the future (``due_date_in_past``), an unknown
    challenged user (``user_not_found``), challenging oneself (``cannot_challenge_self``) and
    a creator who has ``CHALLENGE_OPEN_LIMIT`` open (pending or active) challenges already
    (``409 too_many_open_challenges``; concurrent creates of one user queue on an advisory
    lock, so the cap holds). Not idempotent: each call makes a new challenge.
    """
    if timezone.is_naive(due_date):
        raise InvalidInput("due_date needs a time zone.", code="invalid_due_date")
    if due_date <= timezone.now():
        raise InvalidInput("The deadline must be in the future.", code="due_date_in_past")
    if not title.strip():
        raise InvalidInput("A challenge needs a title.", code="invalid_title")
    challenged = None
    if challenged_username:
        challenged = User.objects.filter(username=challenged_username, is_active=True).first()
        if challenged is None:
            raise InvalidInput("No such user to challenge.", code="user_not_found")
        if challenged.pk == creator.pk:
            raise InvalidInput("You cannot challenge yourself.", code="cannot_challenge_self")
    with transaction.atomic():
        advisory_xact_lock(namespace="challenge-open-limit", key=creator.pk)
        open_count = Challenge.objects.filter(
            challenger=creator, status__in=Challenge.OPEN_STATUSES
        ).count()
        if open_count >= settings.CHALLENGE_OPEN_LIMIT:
            raise Conflict(
                f"You have {open_count} open challenges; the limit is "
                f"{settings.CHALLENGE_OPEN_LIMIT}.",
                code="too_many_open_challenges",
            )
        escrow = account_create(kind=Account.Kind.CHALLENGE_ESCROW)
        return Challenge.objects.create(
            title=title.strip(),
            description=description,
            category=category,
            challenger=creator,
            challenged=challenged,
            escrow=escrow,
            due_date=due_date,
        )


NOTES_MAX_LENGTH = 10_000


def challenge_notes_update(
    *,
    challenge_id: int,
    actor: Any,
    evidence: str | None = None,
    admin_notes: str | None = None,
) -> Challenge:
    """Set a challenge's ``evidence`` (its challenger, its challenged user or staff) and/or
    its ``admin_notes`` (staff only); None leaves a field as it is.

    Allowed in any status: evidence often arrives while staff decide. Locks the row; audited
    as ``challenge.notes`` with the fields changed (not their text: evidence may be long and
    the row keeps it).
    """
    staff = staff_action_allowed(user=actor, action="challenge.notes")
    changes = {
        name: value.strip()
        for name, value in (("evidence", evidence), ("admin_notes", admin_notes))
        if value is not None
    }
    if any(len(value) > NOTES_MAX_LENGTH for value in changes.values()):
        raise InvalidInput(
            f"Notes may hold at most {NOTES_MAX_LENGTH} characters.", code="note_too_long"
        )
    if "admin_notes" in changes and not staff:
        raise Forbidden("Only staff write admin notes.", code="staff_only")
    with transaction.atomic():
        challenge = Challenge.objects.select_for_update().filter(pk=challenge_id).first()
        if challenge is None:
            raise NotFound("No such challenge.", code="challenge_not_found")
        party = getattr(actor, "pk", None) in (challenge.challenger_id, challenge.challenged_id)
        if not (staff or party):
            raise Forbidden(
                "Only the challenge's parties and staff give evidence.", code="not_a_party"
            )
        for name, value in changes.items():
            setattr(challenge, name, value)
        challenge.updated_at = timezone.now()
        challenge.save(update_fields=[*changes, "updated_at"])
        audit_record(
            actor=actor,
            action="challenge.notes",
            target_type="challenge",
            target_id=challenge.pk,
            details={"fields": sorted(changes)},
        )
    return challenge


# A stake in one statement, all of whose writes happen or none do, so that it commits on its
# own (autocommit) without a round trip for BEGIN or COMMIT:
# - ``open`` locks the challenge row, only while the challenge takes stakes. It is the lock the
#   sweep, decline, cancel and resolve take: whichever comes second waits for the first to
#   commit and then re-checks the row as committed (READ COMMITTED re-evaluation). So a stake
#   either lands before the challenge closes, or finds it closed and writes nothing.
# - ``stake`` inserts the stake row into that open challenge, unless this user has one there
#   already or has no wallet (``WALLET_ID_SQL``, the lookup ``wallet_get`` makes). It takes its
#   id from rows ``open`` returns, so after the lock: a challenge's stakes get their ids in
#   the order they hold its row, which the deadline warnings' marks rely on
#   (``DeadlineWarning``). Any other way of inserting stakes must lock the challenge first.
# - ``staked`` adds the stake to its side's total and count and turns a pending challenge
#   active once both sides have a stake. It updates the row ``open`` locked, as committed:
#   SET expressions read it as it was before this stake, hence the ``+`` in the check.
# - The money moves wallet -> escrow by the ledger's own posting (key ``stake:<stake_id>``),
#   after the challenge row was locked, the order every closing of a challenge locks them in.
# No row comes back when nothing was written. The challenge comes back whole as this stake left
# it, with the two parties' usernames, so the API answers without reading it again.
_STAKE_SQL = f"""
WITH input AS (
    SELECT %(side)s = 'yes' AS yes, %(amount)s::bigint AS amount, %(now)s::timestamptz AS now
), wallet AS ({WALLET_ID_SQL}),
open AS (
    SELECT c.id FROM challenges_challenge AS c, input AS i
    WHERE c.id = %(challenge_id)s AND c.status IN ('pending', 'active') AND c.due_date > i.now
    FOR NO KEY UPDATE OF c
), stake AS (
    INSERT INTO challenges_stake (challenge_id, user_id, side, amount)
    SELECT o.id, %(user_id)s, %(side)s, i.amount
    FROM open AS o, input AS i
    WHERE EXISTS (SELECT FROM wallet)
    ON CONFLICT (challenge_id, user_id) DO NOTHING
    RETURNING id, challenge_id, created_at
), staked AS (
    UPDATE challenges_challenge AS c
    SET yes_total = c.yes_total + CASE WHEN i.yes THEN i.amount ELSE 0 END,
        no_total = c.no_total + CASE WHEN i.yes THEN 0 ELSE i.amount END,
        yes_count = c.yes_count + i.yes::int,
        no_count = c.no_count + (NOT i.yes)::int,
        status = CASE WHEN c.status = 'pending'
                           AND c.yes_count + i.yes::int > 0 AND c.no_count + (NOT i.yes)::int > 0
                      THEN 'active' ELSE c.status END,
        updated_at = i.now
    FROM stake AS s, input AS i
    WHERE c.id = s.challenge_id
    RETURNING {columns_sql(Challenge, "c")}
), {
    posting_ctes(
        "SELECT wallet.id, staked.escrow_id, input.amount, %(kind)s, 'stake:' || stake.id "
        "FROM wallet, staked, stake, input"
    )
}
SELECT stake.id, stake.created_at, staked.*, challenger.username, challenged.username
FROM stake
JOIN staked ON true
JOIN auth_user AS challenger ON challenger.id = staked.challenger_id
LEFT JOIN auth_user AS challenged ON challenged.id = staked.challenged_id
"""  # noqa: S608 - names from the models, values as parameters


def _challenge_from_row(row: tuple) -> Challenge:
    """The challenge ``_STAKE_SQL`` returned (from its first column on), its two parties
    loaded with their id and username (what the API shows of them; any other field is read on
    first use)."""
    challenge = row_model(Challenge, row)
    challenger_name, challenged_name = row[-2:]
    challenge.challenger = User.from_db(
        connection.alias, ["id", "username"], [challenge.challenger_id, challenger_name]
    )
    if challenge.challenged_id is not None:
        challenge.challenged = User.from_db(
            connection.alias, ["id", "username"], [challenge.challenged_id, challenged_name]
        )
    return challenge


def _stake_refusal(*, user_id: int, challenge_id: int, now: datetime) -> Conflict | NotFound:
    """Why a stake inserted nothing: no such challenge, no wallet, closed, or staked before."""
    challenge = Challenge.objects.filter(pk=challenge_id).only("status", "due_date").first()
    if challenge is None:
        return NotFound("No such challenge.", code="challenge_not_found")
    if not Account.objects.filter(kind=Account.Kind.USER_WALLET, user_id=user_id).exists():
        return wallet_missing()
    if challenge.status not in Challenge.OPEN_STATUSES or challenge.due_date <= now:
        return Conflict("This challenge no longer takes stakes.", code="challenge_not_open")
    return Conflict("You already have a stake here.", code="already_staked")


def stake_place(*, user: Any, challenge_id: int, side: str, amount: int) -> Stake:
    """Stake ``amount`` of the user's wallet on ``side`` of an open challenge.

    One statement (``_STAKE_SQL``), committed on its own: lock the challenge while it is open
    and before its ``due_date``, insert the stake (one per user and challenge), add it to the
    side's total and count and turn a ``pending`` challenge ``active`` once both sides have a
    stake, and move the money wallet -> escrow with key ``stake:<stake_id>``. A challenge that
    closes (sweep, decline, cancel) takes the same row lock, so no stake lands after it. The
    challenge's row is held for that one statement and its commit, so stakes on a busy
    challenge queue for as short a time as possible. Any refusal (``invalid_side``,
    ``invalid_amount``, ``challenge_not_found``, ``wallet_not_found``, ``challenge_not_open``,
    ``already_staked``, ``insufficient_funds``, ``amount_out_of_range``) changes nothing. The
    stake returned carries its ``challenge`` as this stake left it (totals, status, the
    parties' ids and usernames).
    """
    if side not in Stake.Side.values:
        raise InvalidInput("side must be 'yes' or 'no'.", code="invalid_side")
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise InvalidInput("Amounts are positive integers of minor units.", code="invalid_amount")
    now = timezone.now()
    params = {
        "challenge_id": challenge_id,
        "user_id": user.pk,
        "side": side,
        "amount": amount,
        "now": now,
        "kind": Transfer.Kind.STAKE,
    }
    # On its own the statement commits itself; in a caller's transaction, a refusal by the
    # database (no funds) rolls back to a savepoint and leaves that transaction usable.
    in_transaction = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with posting_errors(), in_transaction, prepared_cursor() as cursor:
        cursor.execute(_STAKE_SQL, params)
        row = cursor.fetchone()
    if row is None:
        raise _stake_refusal(user_id=user.pk, challenge_id=challenge_id, now=now)
    stake_id, created_at = row[:2]
    return Stake(
        id=stake_id,
        challenge=_challenge_from_row(row[2:]),
        user=user,
        side=side,
        amount=amount,
        created_at=created_at,
    )


def challenge_decline(*, user: Any, challenge_id: int) -> Challenge:
    """The challenged user declines: the challenge is cancelled and every stake refunded.

    Only the user named as challenged may decline (``403 not_challenged_user``), and only while
    the challenge is open (``409 challenge_not_open``). Locks the challenge row (staking takes
    the same lock, so no stake lands after it). The other participants are told; the
    ``challenges_cancelled`` signal goes out in the same transaction, so the payout engine's
    refund job commits with the cancellation. Audited as ``challenge.decline``.
    """
    with transaction.atomic(durable=True):
        challenge = Challenge.objects.select_for_update().filter(pk=challenge_id).first()
        if challenge is None:
            raise NotFound("No such challenge.", code="challenge_not_found")
        if challenge.challenged_id is None or challenge.challenged_id != user.pk:
            raise Forbidden(
                "Only the user this challenge names can decline it.", code="not_challenged_user"
            )
        if challenge.status not in Challenge.OPEN_STATUSES:
            raise Conflict("This challenge is no longer open.", code="challenge_not_open")
        challenge.status = Challenge.Status.CANCELLED
        challenge.updated_at = timezone.now()
        challenge.save(update_fields=["status", "updated_at"])
        notifications_insert_select(
            select_sql=_CANCELLED_SELECT,
            params={
                "ids": [challenge.pk],
                "why": "was declined by the challenged user; every stake is refunded.",
                "reason": "declined",
                "skip": user.pk,
            },
        )
        audit_record(
            actor=user, action="challenge.decline", target_type="challenge", target_id=challenge.pk
        )
        challenges_cancelled.send(sender=Challenge, challenge_ids=[challenge.pk])
    return challenge


# One notification to every participant of the challenges in ``targets``: the challenger,
# the challenged user and every staker, each once per challenge. ``targets`` yields one row per
# challenge with the columns id, challenger_id, challenged_id and the notification's kind,
# title, body, priority and data: the text and the jsonb are built once per challenge and
# copied to each participant's row (built per row, they cost about a fifth of a fan-out's
# database CPU). ``{where}`` filters ``participants AS p JOIN targets AS t``.
_PARTICIPANTS_SELECT = """
WITH targets AS ({targets}),
participants AS (
    SELECT t.id AS challenge_id, t.challenger_id AS user_id FROM targets AS t
    UNION
    SELECT t.id, t.challenged_id FROM targets AS t WHERE t.challenged_id IS NOT NULL
    UNION
    SELECT s.challenge_id, s.user_id
    FROM challenges_stake AS s JOIN targets AS t ON t.id = s.challenge_id
)
SELECT p.user_id, t.kind, t.id, t.title, t.body, t.priority, t.data,
       t.kind || ':' || t.id || ':' || p.user_id
FROM participants AS p JOIN targets AS t ON t.id = p.challenge_id
{where}
"""

# The status list matches the partial index ``challenge_open_due_idx``, so both scans below
# read only open challenges near their deadline, however many challenges exist.
_SWEEP_SQL = """
UPDATE challenges_challenge
SET status = CASE status WHEN 'active' THEN 'pending_admin' ELSE 'cancelled' END,
    updated_at = %s
WHERE status IN ('pending', 'active') AND due_date <= %s
RETURNING id, status
"""

# One notification per active staff user for a whole sweep, however many challenges it moved:
# the first of them (lowest id) names it, the rest are counted and listed (capped like the
# live event). A sweep moving one challenge tells exactly what it told per challenge before;
# a sweep moving 9,000 no longer leaves 9,000 rows in every staff member's list. The dedup key
# is the first challenge's: each challenge is moved by one sweep only (the UPDATE re-checks the
# status under the row lock), so two sweeps never share it and a repeat inserts nothing.
_NEEDS_RESOLUTION_SELECT = """
SELECT u.id, 'needs_resolution', c.id, %(title)s,
       left('"' || c.title || '" ' || %(rest)s, 1000), 'normal',
       jsonb_build_object('challenge_id', c.id, 'due_date', c.due_date,
                          'count', %(count)s::int, 'challenge_ids', %(ids)s::jsonb),
       'needs_resolution:' || c.id || ':' || u.id
FROM challenges_challenge AS c CROSS JOIN auth_user AS u
WHERE c.id = %(first)s AND u.is_staff AND u.is_active
"""

# Challenge ids carried by the staff notification and its live event: far below Pusher's
# 10 kB event limit; the console's "awaiting resolution" list has them all.
NEEDS_RESOLUTION_IDS_SHOWN = 100


def _needs_resolution_params(ids: list[int]) -> dict[str, Any]:
    """The staff notification's parameters for the challenges (ascending ids) one sweep moved
    to staff."""
    count = len(ids)
    if count == 1:
        title, rest = "Challenge needs resolution", "passed its deadline and waits for a result."
    else:
        title = f"{count:,} challenges need resolution"
        rest = f"and {count - 1:,} more passed their deadline and wait for a result."
    return {
        "first": ids[0],
        "title": title,
        "rest": rest,
        "count": count,
        "ids": json.dumps(ids[:NEEDS_RESOLUTION_IDS_SHOWN]),
    }


# Parameters: ids (the challenges), why (the body after the title), reason (a code for
# clients), skip (a user not to tell: the one who cancelled, or NULL).
_CANCELLED_SELECT = _PARTICIPANTS_SELECT.format(
    targets="""
    SELECT id, challenger_id, challenged_id, 'challenge_cancelled' AS kind,
           'Challenge cancelled' AS title, left('"' || title || '" ' || %(why)s, 1000) AS body,
           'normal' AS priority,
           jsonb_build_object('challenge_id', id, 'reason', %(reason)s::text) AS data
    FROM challenges_challenge
    WHERE id = ANY(%(ids)s)
    """,
    where="WHERE p.user_id IS DISTINCT FROM %(skip)s",
)


@dataclass(frozen=True, slots=True)
class SweepResult:
    pending_admin: list[int]
    cancelled: list[int]
    notifications: int


def challenges_sweep_deadlines(*, now: datetime | None = None) -> SweepResult:
    """Close every open challenge whose deadline has passed (``due_date <= now``).

    One ``UPDATE`` moves expired ``active`` challenges to ``pending_admin`` and expired
    ``pending`` ones (one side never staked) to ``cancelled``; then every active staff user gets
    one ``needs_resolution`` notification for all the challenges this run moved to them, and
    every participant of a cancelled one a ``challenge_cancelled`` notification, each one
    ``INSERT ... SELECT``, and a live alert goes to the staff channel after commit. Three
    statements whatever the number of challenges.

    Idempotent and safe to run concurrently: a second run finds the rows no longer open (the
    row lock makes it re-check them) and moves nothing; notification dedup keys
    (``<kind>:<challenge>:<user>``, the staff one's named by its first challenge) make any
    repeat insert nothing. The cancelled challenges' refund jobs are created by the payout
    engine, in this transaction (``challenges_cancelled``).
    """
    now = now or timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_SWEEP_SQL, [now, now])
            moved = cursor.fetchall()
        moved.sort()
        pending_admin = [pk for pk, status in moved if status == Challenge.Status.PENDING_ADMIN]
        cancelled = [pk for pk, status in moved if status == Challenge.Status.CANCELLED]
        notified = 0
        if pending_admin:
            notified += len(
                notifications_insert_select(
                    select_sql=_NEEDS_RESOLUTION_SELECT,
                    params=_needs_resolution_params(pending_admin),
                )
            )
            # Stored notifications reach each staff member; this is the live signal for open
            # dashboards.
            staff_event_publish_on_commit(
                event="challenges.needs_resolution",
                data={
                    "count": len(pending_admin),
                    "challenge_ids": pending_admin[:NEEDS_RESOLUTION_IDS_SHOWN],
                },
            )
        if cancelled:
            notified += len(
                notifications_insert_select(
                    select_sql=_CANCELLED_SELECT,
                    params={
                        "ids": cancelled,
                        "why": "reached its deadline without stakes on both sides; "
                        "every stake is refunded.",
                        "reason": "no_opponent",
                        "skip": None,
                    },
                )
            )
            challenges_cancelled.send(sender=Challenge, challenge_ids=cancelled)
    return SweepResult(pending_admin=pending_admin, cancelled=cancelled, notifications=notified)


# The marks of the warnings due now, one per challenge inside a window (policy at the top of
# this module), created if new and locked in challenge order: a concurrent scan waits here
# until this one commits, then reads what it recorded. The no-op update is what takes the
# lock on an existing mark and returns its latest ``last_stake_id``.
_WARNING_MARKS_SQL = """
INSERT INTO challenges_deadlinewarning (challenge_id, kind)
SELECT id, CASE WHEN due_date <= %(t10)s THEN 'deadline_10m' ELSE 'deadline_1h' END
FROM challenges_challenge
WHERE status IN ('pending', 'active')
  AND due_date > %(now)s AND due_date <= %(t60)s
  AND (due_date <= %(t10)s OR due_date > %(t40)s)
ORDER BY 1
ON CONFLICT (challenge_id, kind) DO UPDATE SET challenge_id = EXCLUDED.challenge_id
RETURNING id, challenge_id, kind, last_stake_id
"""

# Each locked mark moves to its challenge's highest stake id, read in a snapshot taken after
# the lock (a statement of its own). The two sides' latest stakes are two backward steps in
# ``stake_side_idx``.
_WARNING_MARKS_ADVANCE_SQL = """
UPDATE challenges_deadlinewarning AS m
SET last_stake_id = coalesce(greatest(
    (SELECT max(s.id) FROM challenges_stake AS s
     WHERE s.challenge_id = m.challenge_id AND s.side = 'yes'),
    (SELECT max(s.id) FROM challenges_stake AS s
     WHERE s.challenge_id = m.challenge_id AND s.side = 'no')), 0)
WHERE m.id = ANY(%(marks)s)
RETURNING m.id, m.last_stake_id
"""

# Who gets each warning now: on its first scan (``after`` NULL) the challenger, the challenged
# user and every staker through ``upto``; on a later one the stakers after ``after`` through
# ``upto``. The two parties are told on the first scan whether or not they staked, so stakes
# of theirs are never counted again. Keyless rows (``keyed=False``): the marks are the record.
_WARNINGS_SELECT = """
WITH marks AS (
    SELECT * FROM unnest(%(challenges)s::bigint[], %(kinds)s::text[], %(after)s::bigint[],
                         %(upto)s::bigint[]) AS m (challenge_id, kind, after, upto)
), targets AS (
    SELECT c.id, c.challenger_id, c.challenged_id, m.kind, m.after, m.upto,
           CASE m.kind WHEN 'deadline_10m' THEN 'Less than 10 minutes left'
                       ELSE 'Less than an hour left' END AS title,
           left('"' || c.title || '" closes in '
                || ceil(extract(epoch FROM c.due_date - %(now)s) / 60)::int || ' minutes.',
                1000) AS body,
           CASE m.kind WHEN 'deadline_10m' THEN 'high' ELSE 'normal' END AS priority,
           jsonb_build_object('challenge_id', c.id, 'due_date', c.due_date,
                              'minutes_left',
                              ceil(extract(epoch FROM c.due_date - %(now)s) / 60)::int) AS data
    FROM marks AS m JOIN challenges_challenge AS c ON c.id = m.challenge_id
    WHERE c.status IN ('pending', 'active') AND c.due_date > %(now)s
), participants AS (
    SELECT t.id AS challenge_id, t.challenger_id AS user_id FROM targets AS t
    WHERE t.after IS NULL
    UNION ALL
    SELECT t.id, t.challenged_id FROM targets AS t
    WHERE t.after IS NULL AND t.challenged_id IS NOT NULL
    UNION ALL
    SELECT s.challenge_id, s.user_id
    FROM targets AS t JOIN challenges_stake AS s ON s.challenge_id = t.id
    WHERE s.side IN ('yes', 'no') AND s.id > coalesce(t.after, 0) AND s.id <= t.upto
      AND s.user_id <> t.challenger_id AND s.user_id IS DISTINCT FROM t.challenged_id
)
SELECT p.user_id, t.kind, t.id, t.title, t.body, t.priority, t.data, NULL
FROM participants AS p JOIN targets AS t ON t.id = p.challenge_id
"""


def challenges_send_deadline_warnings(*, now: datetime | None = None) -> int:
    """Create the due 1-hour and 10-minute warnings (policy at the top of this module) for
    every participant of every open challenge not told yet; return how many were new.
    Delivery is enqueued after commit in chunks (``notifications_insert_select``).

    Three statements whatever the number of challenges and participants: lock (or create) the
    warnings' marks, move each to its challenge's latest stake, insert one keyless row per
    participant between the old mark and the new (``DeadlineWarning`` says why nobody is left
    out). Idempotent and safe to run concurrently: a second scan waits for the first's marks
    and finds nobody new.
    """
    now = now or timezone.now()
    window = {
        "now": now,
        "t10": now + WARNING_10M_WINDOW,
        "t40": now + WARNING_1H_CLOSES,
        "t60": now + WARNING_1H_WINDOW,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_WARNING_MARKS_SQL, window)
        marks = {pk: (challenge_id, kind, after) for pk, challenge_id, kind, after in cursor}
        if not marks:
            return 0
        cursor.execute(_WARNING_MARKS_ADVANCE_SQL, {"marks": list(marks)})
        advanced = dict(cursor.fetchall())
        due = [(*marks[pk], advanced[pk]) for pk in sorted(marks)]
        challenges, kinds, after, upto = (list(column) for column in zip(*due, strict=True))
        return len(
            notifications_insert_select(
                select_sql=_WARNINGS_SELECT,
                params={
                    "now": now,
                    "challenges": challenges,
                    "kinds": kinds,
                    "after": after,
                    "upto": upto,
                },
                keyed=False,
            )
        )
