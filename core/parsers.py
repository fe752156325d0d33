"""The API's request parsers (``DEFAULT_PARSER_CLASSES``).

A module of its own: DRF imports it while defining ``APIView``, so it may not import DRF's
views (``core.api`` does).
"""

from django.conf import settings
from rest_framework import exceptions, parsers


def _too_deep(data: object, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing nesting deeper than ``API_MAX_JSON_DEPTH``.

    Python's decoder raises ``RecursionError`` (not the ``ValueError`` DRF catches) a few
    thousand levels down, which would be a 500; shallower nesting that no input of this API
    needs is refused too, before any serializer walks it.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON nested too deeply.") from exc
        if _too_deep(data, settings.API_MAX_JSON_DEPTH):
            raise exceptions.ParseError(
                f"JSON nested deeper than {settings.API_MAX_JSON_DEPTH} levels."
            )
        return data
