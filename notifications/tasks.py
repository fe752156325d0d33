from celery import shared_task

from notifications.services import (
    notifications_deliver,
    notifications_deliver_fan_out,
    notifications_redeliver_stale,
    staff_event_publish,
)


@shared_task(time_limit=300, soft_time_limit=270)
def notifications_deliver_task(notification_ids: list[int]) -> int:
    return notifications_deliver(notification_ids=[int(pk) for pk in notification_ids])


@shared_task(time_limit=120, soft_time_limit=100)
def notifications_deliver_fan_out_task(id_ranges: list[list[int]]) -> int:
    return notifications_deliver_fan_out(
        id_ranges=[[int(first), int(last)] for first, last in id_ranges]
    )


@shared_task(time_limit=60, soft_time_limit=50)
def staff_event_publish_task(event: str, data: dict) -> None:
    staff_event_publish(event=str(event), data=dict(data))


@shared_task(time_limit=60, soft_time_limit=50)
def notifications_redeliver_stale_task() -> int:
    return notifications_redeliver_stale()
