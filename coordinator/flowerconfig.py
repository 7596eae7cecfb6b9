"""Flower's configuration for chordload, shipped inside the package: ``chordload flower``
passes it to Flower (``--conf``) from any directory, so Flower never starts open:

    FLOWER_BASIC_AUTH=admin:secret chordload flower

(``celery -A workers flower`` run from the repository, or /app in the image, reads it
through ``./flowerconfig.py``.)

- basic auth comes from ``FLOWER_BASIC_AUTH`` (``user:password``, several comma-separated);
  Flower refuses to start without it (or without OAuth, ``FLOWER_AUTH``), so the API that can
  revoke tasks and shut workers down is never open;
- it listens on ``FLOWER_ADDRESS`` (default ``127.0.0.1``, loopback only) and ``FLOWER_PORT``
  (default 5555); the compose service sets ``FLOWER_ADDRESS=0.0.0.0`` inside its container and
  publishes the port on the host's loopback unless ``FLOWER_PUBLISH`` says otherwise.
Command-line flags (``--address=...``) still win over this file.
"""

import os
import sys

address = os.environ.get("FLOWER_ADDRESS") or "127.0.0.1"
port = int(os.environ.get("FLOWER_PORT") or 5555)
basic_auth = [c.strip() for c in os.environ.get("FLOWER_BASIC_AUTH", "").split(",") if c.strip()]

if not basic_auth and not os.environ.get("FLOWER_AUTH"):
    sys.exit(
        "flower: set FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH for OAuth); chordload "
        "does not start Flower without authentication"
    )
if any(":" not in c for c in basic_auth):
    sys.exit("flower: FLOWER_BASIC_AUTH must be user:password[,user2:password2]")

# Keep the event state bounded on long-lived deployments.
max_tasks = int(os.environ.get("FLOWER_MAX_TASKS") or 10000)
purge_offline_workers = int(os.environ.get("FLOWER_PURGE_OFFLINE_WORKERS") or 3600)
