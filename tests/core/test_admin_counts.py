"""The admin's lists of tables that grow with the platform's history (accounts, transfers,
challenges, stakes, entries, notifications, users) read no whole table on each page view: no
count(*) of an unfiltered list once the table is big, no DISTINCT over it to draw a filter."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

import core.admin
from users.services import user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser() -> Client:
    boss = user_create(
        username="boss", password="pw-for-tests-1", is_superuser=True, validate=False
    )
    client = Client()
    client.force_login(boss)
    return client


@pytest.fixture
def accounts(make_user) -> int:
    """Wallets of five users (and the system accounts), the planner told about them; returns
    its row estimate."""
    for _ in range(5):
        make_user()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE payouts_account")
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'payouts_account'")
        return cursor.fetchone()[0]


def _get(browser: Client, url: str) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = browser.get(url)
    assert response.status_code == 200
    return response.content.decode(), [query["sql"] for query in captured.captured_queries]


def _counts(queries: list[str], table: str) -> list[str]:
    return [sql for sql in queries if "COUNT(" in sql.upper() and f'FROM "{table}"' in sql]


def test_the_unfiltered_list_of_a_big_table_shows_an_estimate_and_counts_nothing(
    browser, accounts, monkeypatch
):
    # Given a table the admin treats as big
    monkeypatch.setattr(core.admin, "ESTIMATED_COUNT_FROM", 3)
    # When staff open its list with no filter
    page, queries = _get(browser, "/admin/ledger/account/")
    # Then nothing counts its rows, and the line under the list says the figure is an estimate
    # (the search bar gives no figure of its own, and there are no per-filter counts to show)
    assert _counts(queries, "payouts_account") == []
    assert f"about {accounts} accounts" in page
    assert f"{accounts} results" not in page
    assert "Show counts" not in page


def test_a_filtered_list_of_a_big_table_is_counted_exactly(browser, accounts, monkeypatch):
    monkeypatch.setattr(core.admin, "ESTIMATED_COUNT_FROM", 3)
    page, queries = _get(browser, "/admin/ledger/account/?kind__exact=user_wallet")
    assert len(_counts(queries, "payouts_account")) == 1
    assert "about" not in page
    assert "6 accounts" in page  # the five users' wallets and the superuser's
    assert "6 results" in page


def test_a_small_table_is_counted_exactly(browser, accounts):
    page, queries = _get(browser, "/admin/ledger/account/")
    assert len(_counts(queries, "payouts_account")) == 1
    assert "about" not in page


@pytest.mark.parametrize(
    "url",
    [
        "/admin/challenges/challenge/",
        "/admin/ledger/account/",
        "/admin/payouts/payoutentry/",
        "/admin/notifications/notification/",
        "/admin/auth/user/",
    ],
)
def test_no_list_reads_its_whole_table_to_draw_its_filters(browser, accounts, url):
    # A date hierarchy or a filter offering every value of a column runs a DISTINCT over the
    # table on each page view.
    _, queries = _get(browser, url)
    assert [sql for sql in queries if "DISTINCT" in sql.upper()] == []
