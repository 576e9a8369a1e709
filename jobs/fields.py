"""A JSON field that keeps its objects' key order."""

from __future__ import annotations

import json
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


class OrderedJSONField(models.JSONField):
    """JSON stored as PostgreSQL `json`, which keeps the text as written, not `jsonb`.

    jsonb stores an object's keys in an order of its own (shortest first), so a result shaped by
    a job's schema, or the schema itself, would come back with its properties shuffled. Nothing
    queries inside these values, which is all jsonb would add.
    """

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "json"

    def get_db_prep_value(
        self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False
    ) -> Any:
        # As text: Django's own adapter sends jsonb, and the cast to json would keep jsonb's order.
        if value is None:
            return None
        return json.dumps(value, cls=self.encoder, ensure_ascii=False)

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        # psycopg parses `json` itself (into dicts, which keep their order).
        if isinstance(value, str):
            return super().from_db_value(value, expression, connection)
        return value
