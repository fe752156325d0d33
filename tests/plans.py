"""Reading a statement's plan: which tables it reads and how (tests that a query stays off
full scans of tables that grow)."""

from django.db import connection


def plan_reads(sql: str) -> list[tuple[str, str]]:
    """Each read of a table in the plan of ``sql`` (a statement as executed, its values
    inlined), as (table, node type), from ``EXPLAIN (FORMAT JSON)``; nothing is run."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        nodes = [cursor.fetchone()[0][0]["Plan"]]
    reads = []
    while nodes:
        node = nodes.pop()
        if "Relation Name" in node:
            reads.append((node["Relation Name"], node["Node Type"]))
        nodes.extend(node.get("Plans", []))
    return reads
