"""HTTP plumbing shared by every resource: the Api and Blueprint, authorization, the request's
unit of work, request ids, logs, metrics, error and field helpers, streamed responses."""
