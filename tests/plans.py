"""Reading a statement's plan: which tables it reads and how (tests that a query stays off
full scans of tables that grow)."""

from django.db import connection


def plan_nodes(sql: str) -> list[dict]:
    """Every node of the plan of ``sql`` (a statement as executed, its values inlined), from
    ``EXPLAIN (FORMAT JSON)``; nothing is run."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        pending = [cursor.fetchone()[0][0]["Plan"]]
    nodes = []
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    return nodes


def plan_reads(sql: str) -> list[tuple[str, str]]:
    """Each read of a table in the plan of ``sql``, as (table, node type)."""
    return [
        (node["Relation Name"], node["Node Type"])
        for node in plan_nodes(sql)
        if "Relation Name" in node
    ]
