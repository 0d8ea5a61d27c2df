"""What every command handler gets: parsed args, output, environment, a lazy client."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from odockctl.client import Client, Connection
from odockctl.errors import UsageError
from odockctl.output import Output
from odockctl.settings import CliSettings, read_secret_file
from odockctl.values import ValueProblem


@dataclass
class Context:
    """Per-invocation state shared by the handlers."""

    args: argparse.Namespace
    out: Output
    err: TextIO
    stdin: TextIO
    environ: Mapping[str, str]
    settings: CliSettings
    _client: Client | None = field(default=None, init=False)

    def client(self) -> Client:
        """The connected client; a usage error when no admin token is configured."""
        if self._client is None:
            token = self.args.token or self.settings.token
            if not token:
                raise UsageError(
                    "no admin token: set ODOCK_ADMIN_TOKEN (or ODOCK_ADMIN_TOKEN_FILE) or pass --token"
                )
            if self.args.timeout <= 0:
                raise UsageError(f"--timeout must be positive, got {self.args.timeout}")
            self._client = Client(
                Connection(
                    address=self.args.address or self.settings.address,
                    token=token,
                    timeout=self.args.timeout,
                    tls_ca_file=self.args.tls_ca or self.settings.tls_ca_file,
                    tls_cert_file=self.args.tls_cert or self.settings.tls_cert_file,
                    tls_key_file=self.args.tls_key or self.settings.tls_key_file,
                )
            )
        return self._client

    def close(self) -> None:
        """Release the channel if one was opened."""
        if self._client is not None:
            self._client.close()

    def warn(self, text: str) -> None:
        """One warning line on stderr."""
        self.err.write(f"odockctl: warning: {text}\n")

    def secret(self, what: str) -> str:
        """A secret from --secret-env, --secret-file, --secret (warned) or stdin; never empty."""
        args = self.args
        given = [n for n in ("secret_env", "secret_file", "secret") if getattr(args, n, None) is not None]
        if len(given) > 1:
            raise UsageError("give only one of --secret-env, --secret-file, --secret")
        if args.secret_env is not None:
            value = self.environ.get(args.secret_env, "").strip()
            if not value:
                raise UsageError(f"--secret-env: environment variable {args.secret_env} is not set or empty")
            return value
        if args.secret_file is not None:
            return read_secret_file(args.secret_file, "--secret-file")
        if args.secret is not None:
            self.warn("--secret puts the secret in the process list; prefer --secret-env or --secret-file")
            value = str(args.secret).strip()
        elif self.stdin.isatty():
            value = getpass.getpass(f"{what}: ").strip()
        else:
            value = self.stdin.read().strip()
        if not value:
            raise UsageError(f"no {what} given (use --secret-env VAR, --secret-file PATH or stdin)")
        return value


def parsed(value: str, parse: Callable[[str], Any], flag: str) -> Any:
    """Apply a values.* parser to a flag value, naming the flag on failure."""
    try:
        return parse(value)
    except ValueProblem as exc:
        raise UsageError(f"{flag}: {exc}") from None


def add_secret_flags(parser: argparse.ArgumentParser) -> None:
    """--secret-env / --secret-file / --secret; stdin when none is given."""
    parser.add_argument("--secret-env", metavar="VAR", help="read the secret from this environment variable")
    parser.add_argument("--secret-file", metavar="PATH", help="read the secret from this file")
    parser.add_argument("--secret", help="the secret itself (discouraged: visible in the process list)")
