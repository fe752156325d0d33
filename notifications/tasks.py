from config.celery import app
from notifications.services import notifications_deliver


@app.task(time_limit=60, soft_time_limit=50)
def notifications_deliver_task(notification_ids: list[int]) -> int:
    return notifications_deliver(notification_ids=notification_ids)
