"""The JSON API fuzzed from its own OpenAPI schema: no 5xx, and every answer matches the schema.

The cases come from the session's seed (tests/seeds.py), so a failure is replayed with
AIJOBS_TEST_SEED; each operation still draws its own cases from it.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.seeds import SEED
from webapp.api import api

schema = schemathesis.openapi.from_dict(api.get_openapi_schema())
schema.config.seed = SEED

pytestmark = pytest.mark.django_db(transaction=True)

# Bounded: a few dozen examples per operation keeps the whole run near half a minute.
MAX_EXAMPLES = 25
# What the API promises: no 5xx, only documented statuses and bodies. Whether a
# schema-valid body is accepted is not among them: a job's input (an extract
# schema above all) has rules no OpenAPI schema can state, answered with 422.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def auth(token):
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_answers_every_generated_request_within_its_schema(case, live_server, auth):
    case.call_and_validate(base_url=live_server.url, headers=auth, checks=CHECKS)
