"""Injected faults as LicenseSpring's own Python SDK sees them: rules set
through Tally's admin API answer check_license with 429, then 503, in
LicenseSpring's error shape. The unchanged SDK raises its ClientError (for
4xx) with the injected status and code, and requests' HTTPError (for 5xx,
as the SDK does) whose body carries them; with the rules cleared the same
call succeeds.

Environment: TALLY_ADDR (host:port), TALLY_PUBLIC_KEY_PEM (path),
TALLY_ADMIN_TOKEN.
"""

import json
import os
import sys
import urllib.request

from licensespring.api.error import ClientError
from requests import HTTPError

sys.path.insert(0, os.path.dirname(__file__))
from licensespring_sdk import client  # noqa: E402

ADDR = os.environ["TALLY_ADDR"]
TOKEN = os.environ["TALLY_ADMIN_TOKEN"]


def faults(method, rules=None):
    body = None if rules is None else json.dumps({"rules": rules}).encode()
    req = urllib.request.Request(
        f"http://{ADDR}/admin/v1/faults", data=body, method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status


def main():
    c = client()
    args = dict(product="studio", license_key="DEMO-STUDIO-0001", hardware_id="sdk-fault-1")
    c.activate_license(is_vm=False, vm_info="", **args)
    rule = {"surface": "licensespring", "endpoint": "/api/v4/check_license", "count": 1}
    assert faults("PUT", [dict(rule, effect={"type": "error", "status": 429, "retry_after_s": 1})]) == 200
    try:
        c.check_license(**args)
        raise AssertionError("the injected 429 was not seen")
    except ClientError as e:
        assert e.code == "too_many_requests", (e.code, e.message)
        assert e.status == 429, e.status
    assert faults("PUT", [dict(rule, effect={"type": "error", "status": 503})]) == 200
    try:
        c.check_license(**args)
        raise AssertionError("the injected 503 was not seen")
    except ClientError as e:
        raise AssertionError(f"a 5xx is not a ClientError in this SDK: {e!r}")
    except HTTPError as e:
        assert e.response.status_code == 503, e.response.status_code
        body = e.response.json()
        assert body["code"] == "service_unavailable" and body["status"] == 503, body
    assert faults("DELETE") == 204
    lic = c.check_license(**args)
    assert lic["license_key"] == "DEMO-STUDIO-0001", lic
    print("sdk: all calls passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report and fail
        print(f"sdk: FAILED: {e!r}", file=sys.stderr)
        raise
