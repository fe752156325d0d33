"""The staff console in a real browser, against the live server and real Celery workers:
log in, see the awaiting challenge on the dashboard, resolve it through the preview, watch
the job page's progress bar reach 100% without a reload while workers pay, pause and resume
it, and replay a dead letter. Each step leaves a screenshot in .devstack/screenshots/."""

import re

import pytest
from celery import current_app

from core.models import DeadLetter
from core.services import dead_letter_record
from notifications.models import Notification
from payouts.models import PayoutJob
from proof.seeding import challenge_seed
from tests.conftest import wait_for
from tests.payouts.helpers import assert_settled, expected_amounts, wallet_balances
from users.services import user_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.browser]

PASSWORD = "console-pw-for-tests-1"
TITLE = "Will it rain in Lisbon on Friday?"


def _figure(page, outcome: str, column: str) -> int:
    return int(page.locator(f'tr[data-outcome="{outcome}"] td.{column}').inner_text())


def test_resolve_watch_pause_resume_and_replay(live_server, page, screenshot, workers, settings):
    # Small batches, one at a time: the job takes long enough to pause and to watch.
    settings.PAYOUT_BATCH_SIZE = 5
    settings.PAYOUT_PARALLELISM = 1
    workers.start("payouts,notifications", name="console")
    wait_for(lambda: current_app.control.ping(timeout=0.5), timeout=30)  # the worker is up
    challenge = challenge_seed(stakers=4_000, yes_share=0.5, seed=11, title=TITLE)
    before = wallet_balances(challenge)
    user_create(username="ops", password=PASSWORD, is_staff=True, is_superuser=True, validate=False)

    # Log in as staff: the dashboard shows the challenge awaiting resolution
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    dashboard = page.locator("#console-dashboard")
    assert TITLE in dashboard.inner_text()
    assert "1 challenge" in page.locator("#awaiting-count").inner_text()
    screenshot("01-dashboard")

    # Open it, press Resolve…: the preview's figures are what the settlement rule says
    page.click(f"a.awaiting-challenge:has-text('{TITLE}')")
    page.wait_for_url(re.compile(r"/admin/challenges/challenge/\d+/change/"))
    screenshot("02-challenge")
    assert page.locator("a.console-button", has_text="Resolve…").is_visible()
    page.click("a.console-button:has-text('Resolve…')")
    page.wait_for_url(re.compile(r"/resolve/$"))
    expected, fee = expected_amounts(challenge, "yes", settings.PLATFORM_FEE_BPS)
    assert _figure(page, "challenger_won", "entries") == len(expected) == 2_000
    assert _figure(page, "challenger_won", "total") == sum(expected.values())
    assert _figure(page, "challenger_won", "fee") == fee
    assert _figure(page, "challenger_won", "smallest") == min(expected.values())
    assert _figure(page, "challenger_won", "largest") == max(expected.values())
    assert _figure(page, "draw", "total") == challenge.yes_total + challenge.no_total
    assert page.locator("#id_rail_stripe").is_disabled()  # Stripe is not configured here
    page.check("input[name=result][value=challenger_won]")
    page.fill("#id_note", "The city's weather station logged 4 mm on Friday.")
    screenshot("03-resolve-preview")

    # Confirm: we land on the job page while the workers pay
    page.click("input[type=submit][value='Resolve and pay']")
    page.wait_for_url(re.compile(r"/admin/payouts/payoutjob/\d+/change/"))
    job = PayoutJob.objects.get(challenge=challenge)
    screenshot("04-job-started")

    # Pause from the job page (through its confirmation); nothing is paid while paused
    page.click("#control-pause")
    page.click('input[type=submit][value="Yes, I\'m sure"]')
    page.wait_for_url(re.compile(r"/admin/payouts/payoutjob/\d+/change/"))
    assert page.locator("#payout-status").inner_text() == "paused"
    paused_at = PayoutJob.objects.get(pk=job.pk).completed_count
    assert paused_at < job.total_entries or job.total_entries == 0
    page.wait_for_timeout(3_000)
    assert PayoutJob.objects.get(pk=job.pk).completed_count == paused_at
    assert page.locator("#control-resume").is_visible()
    screenshot("05-paused")

    # Resume, then watch: the bar reaches 100% on the same page, without a reload
    page.click("#control-resume")
    page.click('input[type=submit][value="Yes, I\'m sure"]')
    page.wait_for_url(re.compile(r"/admin/payouts/payoutjob/\d+/change/"))
    page.evaluate("window.sameDocument = true")
    page.wait_for_function(
        "document.getElementById('payout-progress-bar').value >= 50", timeout=120_000
    )
    screenshot("06-live-job", full_page=False)
    page.wait_for_function(
        "document.getElementById('payout-progress-bar').value == 100", timeout=120_000
    )
    page.wait_for_function("document.getElementById('payout-status').textContent == 'completed'")
    assert page.evaluate("window.sameDocument") is True  # the page was never reloaded
    assert "final state: completed" in page.locator("#payout-live").inner_text()
    screenshot("07-job-completed")
    assert_settled(job, winning_side="yes", wallets_before=before)

    # A dead letter of the job (its outcome notifications, one per staker, were lost for
    # good): replay it
    wait_for(
        lambda: Notification.objects.filter(data__payout_job_id=job.pk).count() == 4_000,
        timeout=60,
    )
    Notification.objects.filter(data__payout_job_id=job.pk).delete()
    dead_letter_record(
        task_id="console-lost-notify",
        task_name="payouts.tasks.payout_job_notify_task",
        args=[job.pk],
        kwargs={},
        queue="notifications",
        error="OperationalError: the server closed the connection",
        traceback="",
        attempts=5,
        subject=f"payout_job:{job.pk}",
    )
    page.reload()
    page.click("a.replay-link")
    page.wait_for_url(re.compile(r"/replay/$"))
    assert "payout_job_notify_task" in page.content()
    page.click('input[type=submit][value="Yes, I\'m sure"]')
    page.wait_for_url(re.compile(r"/admin/payouts/payoutjob/\d+/change/"))
    assert "replayed" in page.locator("#dead-letters").inner_text()
    assert DeadLetter.objects.get(task_id="console-lost-notify").status == "replayed"
    wait_for(
        lambda: Notification.objects.filter(data__payout_job_id=job.pk).count() == 4_000,
        timeout=60,
    )
    screenshot("08-dead-letter-replayed")
