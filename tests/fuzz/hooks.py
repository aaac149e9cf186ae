"""schemathesis hooks: strategies for the API's custom scalars, and the API's own check that
no response is a server failure (HTTP 5xx, or a GraphQL error coded INTERNAL) and every
GraphQL error carries one of the contract's codes."""
import schemathesis
from hypothesis import strategies as st

CODES = {"UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "BAD_USER_INPUT", "CONFLICT", "INTERNAL"}

from schemathesis.graphql import nodes

schemathesis.graphql.scalar("Date", st.dates().map(lambda d: nodes.String(d.isoformat())))
schemathesis.graphql.scalar("Time", st.times().map(lambda t: nodes.String(t.strftime("%H:%M:%S"))))
schemathesis.graphql.scalar("DateTime", st.datetimes().map(lambda t: nodes.String(t.isoformat() + "Z")))
schemathesis.graphql.scalar("Upload", st.just(nodes.Null))


@schemathesis.check
def no_server_failure(ctx, response, case):
    assert response.status_code < 500, f"HTTP {response.status_code}"
    if "graphql" not in str(case.operation.label).lower() and not str(case.operation.label).startswith(("Query.", "Mutation.")):
        return None
    try:
        payload = response.json()
    except ValueError:
        return None
    for error in (payload or {}).get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert code in CODES, f"an error without a contract code: {error}"
        assert code != "INTERNAL", f"a server failure: {error}"
    return None
