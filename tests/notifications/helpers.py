from notifications.services import notifications_insert_select

# One notification per given user id, through the same set-based insert the producers use.
_SELECT = """
SELECT u.id, 'payout_completed', NULL, 'Hello', 'Body ' || u.id, 'normal',
       jsonb_build_object('n', u.id),
       %s || ':' || u.id
FROM auth_user AS u WHERE u.id = ANY(%s)
"""


def notify(users, *, key: str = "test") -> list[int]:
    return notifications_insert_select(select_sql=_SELECT, params=[key, [u.pk for u in users]])
