"""``{% console_dashboard as dashboard %}``: the console's figures for the admin index."""

from django import template

from payouts.dashboard import console_dashboard as dashboard_figures

register = template.Library()


@register.simple_tag
def console_dashboard() -> dict:
    return dashboard_figures()
