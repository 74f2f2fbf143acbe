"""OpenAPI documentation of the id path parameters (the ids are checked in the views)."""

from __future__ import annotations

from typing import Any


def id_parameter(
    name: str, description: str, fmt: str | None, example: str, pattern: str | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    if pattern:
        schema["pattern"] = pattern
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": schema,
        "example": example,
    }


EXAMPLE_UUID = "123e4567-e89b-12d3-a456-426614174000"
DASHBOARD_ID_PARAMETER = id_parameter("dashboardId", "Dashboard id (UUID)", "uuid", EXAMPLE_UUID)
MAPPING_ID_PARAMETER = id_parameter("mappingId", "Tool mapping id (UUID)", "uuid", EXAMPLE_UUID)
KPI_ID_PARAMETER = id_parameter("kpiId", "KPI id (UUID)", "uuid", EXAMPLE_UUID)
# ``{base}/integrity`` is not an id: that path is the integrity endpoint.
AUDIT_LOG_ID_PARAMETER = id_parameter(
    "id",
    "Audit log entry id (24 hex characters)",
    None,
    "507f1f77bcf86cd799439011",
    "^[0-9a-fA-F]{24}$",
)
