"""A meter across a month's end, as LicenseSpring's own Python SDK sees it
(the worked example of docs/harness.md): the server runs on the test clock
(`--clock virtual`); the SDK consumes 500 AI credits on 30 November; the
clock is set past midnight on 1 December through Tally's admin API; the
same unchanged SDK then reads the feature with 0 used and consumes again.
The SDK signs with the real time: the server checks its Date on the wall
clock, so a virtual month ahead does not lock it out.

Environment: TALLY_ADDR (host:port), TALLY_PUBLIC_KEY_PEM (path),
TALLY_ADMIN_TOKEN.
"""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from licensespring_sdk import client  # noqa: E402

ADDR = os.environ["TALLY_ADDR"]
TOKEN = os.environ["TALLY_ADMIN_TOKEN"]


def set_clock(instant):
    req = urllib.request.Request(
        f"http://{ADDR}/admin/v1/clock", data=json.dumps({"set": instant}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def main():
    c = client()
    args = dict(product="studio", license_key="DEMO-STUDIO-0001", hardware_id="sdk-month")
    c.activate_license(is_vm=False, vm_info="", **args)
    used = c.add_feature_consumption(feature="ai-credits", consumptions=500, **args)
    assert used["total_consumptions"] == 500, used
    before = c.check_license_feature(feature="ai-credits", **args)
    assert before["total_consumptions"] == 500, before

    moved = set_clock("2026-12-01T00:00:01Z")
    assert moved["now"] == "2026-12-01T00:00:01.000Z", moved

    after = c.check_license_feature(feature="ai-credits", **args)
    assert after["total_consumptions"] == 0, after
    again = c.add_feature_consumption(feature="ai-credits", consumptions=7, **args)
    assert again["total_consumptions"] == 7, again
    print("sdk: all calls passed")


if __name__ == "__main__":
    main()
