"""The dependency audit behind ``scripts/audit``: pip-audit over this interpreter's environment.

pip-audit on its own reports "No known vulnerabilities found" and exits 0 when it could check
nothing at all (every package "not found" because the advisory service is unreachable or
answers nothing), and a traceback when the service cannot be connected to. This wrapper turns
its JSON report into one of four documented outcomes, each with lines starting ``audit:``:

    0  every installed package was checked and none has a known advisory
    1  a vulnerable package is installed (each advisory listed with its fixed versions)
    0  SKIPPED / INCOMPLETE: the advisory database could not be reached or used for some or
       all packages; the reason is printed (3 instead when ODOCK_AUDIT_REQUIRED=1)
    2  pip-audit itself failed for another reason

Extra arguments go to pip-audit, e.g. ``-s osv --osv-url URL`` for another advisory service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

EXIT_OK, EXIT_VULNERABLE, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2, 3
TIMEOUT_S = 900
# What pip-audit's stderr says when the service cannot be reached (requests / urllib3 errors).
_NETWORK_SIGNS = (
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "NameResolutionError", "Max retries exceeded",
    "Connection refused", "Could not connect", "ServiceError", "SSLError", "ProxyError", "timed out",
)  # fmt: skip


def pip_audit(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """pip-audit's JSON report of this environment (editable installs, i.e. odock itself, skipped)."""
    argv = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off",
            "--skip-editable", "--desc", "off", "--aliases", "on", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
                          check=False)  # fmt: skip


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[-1].split())[:300] if lines else "(no output)"


def classify(result: subprocess.CompletedProcess[str], environ: Mapping[str, str]) -> tuple[int, list[str]]:
    """The exit status and the ``audit:`` lines for one pip-audit run."""
    unreachable = EXIT_UNREACHABLE if environ.get("ODOCK_AUDIT_REQUIRED", "") == "1" else EXIT_OK
    try:
        report: dict[str, Any] = json.loads(result.stdout)
        deps: list[dict[str, Any]] = list(report["dependencies"])
    except (ValueError, KeyError, TypeError):
        reason = _last_line(result.stderr)
        if any(sign in result.stderr for sign in _NETWORK_SIGNS):
            return unreachable, [f"audit: SKIPPED: cannot reach the advisory database from here: {reason}"]
        return EXIT_FAILED, [f"audit: error: pip-audit failed (exit {result.returncode}): {reason}"]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason") and "editable" not in str(d["skip_reason"])]
    checked = [d for d in deps if not d.get("skip_reason")]
    if vulnerable:
        lines = [f"audit: VULNERABLE: {len(vulnerable)} installed package(s) with known advisories:"]
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                ids = " / ".join([str(vuln.get("id")), *sorted(vuln.get("aliases") or [])])
                lines.append(f"audit:   {dep['name']} {dep.get('version', '?')}: {ids} (fixed in {fixed})")
        if skipped:
            lines.append(f"audit: (and {len(skipped)} package(s) could not be checked)")
        return EXIT_VULNERABLE, lines
    if skipped:
        how = "SKIPPED" if not checked else "INCOMPLETE"
        names = ", ".join(str(d.get("name")) for d in skipped[:8]) + (", ..." if len(skipped) > 8 else "")
        total = len(skipped) + len(checked)
        reason = skipped[0]["skip_reason"]
        head = f"audit: {how}: the advisory database could not be used for {len(skipped)} of {total} "
        lines = [head + f"installed packages ({names}): {reason}"]
        if checked:
            lines.append(f"audit: no known advisory in the {len(checked)} package(s) that could be checked")
        return unreachable, lines
    return EXIT_OK, [f"audit: ok: no known advisory in the {len(checked)} installed packages"]


def main(argv: Sequence[str]) -> int:
    try:
        result = pip_audit(argv)
    except subprocess.TimeoutExpired:
        code = EXIT_UNREACHABLE if os.environ.get("ODOCK_AUDIT_REQUIRED", "") == "1" else EXIT_OK
        print(f"audit: SKIPPED: pip-audit did not finish within {TIMEOUT_S}s (advisory service too slow?)")
        return code
    code, lines = classify(result, os.environ)
    print("\n".join(lines), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
