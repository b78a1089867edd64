"""The REST control plane: a Flask app factory with flask-smorest resources.

Every error is an RFC 9457 problem (:mod:`coretex.gateway.problems`); every ``/api/v1`` request
needs an API key (:mod:`coretex.gateway.auth`).
"""

from coretex.gateway.app import create_app

__all__ = ["create_app"]
