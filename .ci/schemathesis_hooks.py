"""Schemathesis hooks for the fuzz run in .ci/run.

claim-next with "wait": true parks the request for up to wait_seconds (300) by design; the fuzz
run asks without waiting so every request answers at once. The long poll has its own tests.
"""

import schemathesis


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    if operation is not None and operation.path == "/api/agent/tasks/claim-next":
        if isinstance(body, dict) and "wait" in body:
            body["wait"] = False
    return body
