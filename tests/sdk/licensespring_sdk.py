"""Drives Tally with LicenseSpring's own Python SDK (package `licensespring`),
unchanged: its APIClient pointed at http://HOST:PORT, verifying every
LicenseSignature with Tally's public key.

Environment: TALLY_ADDR (host:port), TALLY_PUBLIC_KEY_PEM (path). Uses the demo
catalog (examples/demo.json). Exits non-zero on the first failure.
"""

import base64
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from Crypto.PublicKey import RSA
from Crypto.Signature.pkcs1_15 import PKCS115_SigScheme

from licensespring.api import APIClient
from licensespring.api.error import ClientError
from licensespring.api.signature import SignatureVerifier

ADDR = os.environ["TALLY_ADDR"]
PEM = open(os.environ["TALLY_PUBLIC_KEY_PEM"]).read()


class TallyVerifier(SignatureVerifier):
    """The SDK's verifier with Tally's key instead of LicenseSpring's."""

    def __init__(self):
        self.verifier = PKCS115_SigScheme(RSA.importKey(PEM))


def client(api_key="demo-api-key", shared_key="demo-shared-key"):
    return APIClient(
        api_key=api_key,
        shared_key=shared_key,
        api_protocol="http",
        api_domain=ADDR,
        signature_verifier=TallyVerifier,
        verify_license_signature=True,
    )


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        assert e.code == code, f"expected {code}, got {e.code}: {e.message}"
        return e
    raise AssertionError(f"expected error {code}, call succeeded")


def main():
    c = client()
    key = "DEMO-STUDIO-0001"
    hw = "sdk-device-1"

    lic = c.activate_license(product="studio", license_key=key, hardware_id=hw, is_vm=False, vm_info="")
    assert lic["license_key"] == key and lic["license_active"] and lic["license_enabled"], lic
    assert lic["times_activated"] == 2, lic["times_activated"]

    chk = c.check_license(product="studio", license_key=key, hardware_id=hw)
    assert chk["id"] == lic["id"] and not chk["is_expired"], chk
    codes = sorted(f["code"] for f in chk["product_features"])
    assert codes == ["ai-credits", "export-4k", "render"], codes

    f = c.check_license_feature(product="studio", license_key=key, hardware_id=hw, feature="export-4k")
    assert f["code"] == "export-4k" and f["floating_in_use_devices"] == 1, f

    cons = c.add_feature_consumption(product="studio", license_key=key, hardware_id=hw, feature="ai-credits", consumptions=7)
    assert cons["total_consumptions"] == 7, cons

    released = c.floating_feature_release(product="studio", license_key=key, hardware_id=hw, feature="export-4k")
    assert released == "", released  # LicenseSpring answers an empty body

    c.track_device_variables(product="studio", license_key=key, hardware_id=hw, variables={"seat": "A1"})
    got = c.get_device_variables(product="studio", license_key=key, hardware_id=hw)
    assert [(v["variable"], v["value"]) for v in got] == [("seat", "A1")], got

    details = c.product_details(product="studio")
    assert details["short_code"] == "studio", details

    # Versions and installation files, and the license object's file fields.
    versions = c.versions(product="studio", license_key=key, hardware_id=hw, env="linux")
    assert [v["version"] for v in versions] == ["1.0.0", "1.1.0"], versions
    inst = c.installation_file(product="studio", license_key=key, hardware_id=hw, env="win64", channel="prod")
    assert inst["version"] == "1.1.0" and inst["environment"] == "win64", inst
    expect_error("version_not_found", c.installation_file, product="studio", license_key=key, hardware_id=hw, version="9.9.9")
    chk = c.check_license(product="studio", license_key=key, hardware_id=hw, include_expired_features=True, env="win64")
    assert chk["environment"] == "win64" and chk["version"] == "2.0.0-beta", chk  # any channel
    details = c.product_details(product="studio", include_latest_version=True)
    assert details["latest_version"]["version"] == "2.0.0-beta", details

    # Floating: a license-level seat released (an empty answer) and borrowed.
    until = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    fl = "DEMO-FLOAT-0001"
    c.activate_license(product="studio", license_key=fl, hardware_id=hw, is_vm=False, vm_info="")
    assert c.floating_release(product="studio", license_key=fl, hardware_id=hw) == ""
    b = c.floating_borrow(product="studio", license_key=fl, hardware_id=hw, borrowed_until=until)
    assert b["borrowed_until"] == until and b["max_borrow_time"] == 24, b
    fb = c.borrow_license_feature(product="studio", feature="export-4k", borrowed_until=until, license_key=key, hardware_id=hw)
    assert fb["borrowed_until"] == until and fb["license_id"] == chk["id"], fb

    # A consumption license; a trial.
    meter = "DEMO-METER-0001"
    c.activate_license(product="studio", license_key=meter, hardware_id=hw, is_vm=False, vm_info="")
    m = c.add_consumption(product="studio", license_key=meter, hardware_id=hw, consumptions=4)
    assert m["total_consumptions"] == 4, m
    t = c.trial_key(product="studio", hardware_id="py-trial-1")
    assert t["is_trial"] and t["license_key"], t

    # Bundles.
    suite = dict(product="suite", license_key="DEMO-SUITE-0001", hardware_id=hw)
    lst = c.activate_bundle(is_vm=False, vm_info="", **suite)
    assert [x["product_details"]["short_code"] for x in lst] == ["studio", "viewer"], lst
    assert len(c.check_bundle(include_expired_features=False, env="linux", **suite)) == 2
    assert "license_deactivated" in c.deactivate_bundle(**suite)

    # Offline: the SDK's request files, its answer checks, the answer loaded as a file.
    req = c.activate_offline_dump(product="studio", license_key=meter, hardware_id="py-offline-1", is_vm=False, vm_info="")
    ans = c.activate_offline(req)
    assert ans["license_key"] == meter and ans["request_id"], ans
    loaded = c.activate_offline_load(base64.b64encode(json.dumps(ans).encode()).decode())
    assert loaded["hardware_id"] == "py-offline-1", loaded
    dreq = c.deactivate_offline_dump(product="studio", license_key=meter, hardware_id="py-offline-1")
    assert "license_deactivated" in c.deactivate_offline(dreq)

    # Customer users; a password change; SSO, which Tally does not offer.
    users = c.customer_license_users(product="cloud", customer="buyer@example.com")
    assert users["users"][0]["email"] == "alice@example.com", users
    assert "password_changed" in c.change_password("alice@example.com", "alice-password", "alice-2")
    expect_error("wrong_credentials", c.user_licenses, product="cloud", username="alice@example.com", password="alice-password")
    assert "password_changed" in c.change_password("alice@example.com", "alice-2", "alice-password")
    expect_error("sso_customer_account_url_error", c.sso_url, product="cloud", customer_account_code="acme")

    ul = c.user_licenses(product="cloud", username="alice@example.com", password="alice-password")
    assert len(ul) == 1 and ul[0]["user"]["email"] == "alice@example.com", ul
    expect_error("wrong_credentials", c.user_licenses, product="cloud", username="alice@example.com", password="nope")

    expect_error("invalid_license_feature_code", c.check_license_feature, product="studio", license_key=key, hardware_id=hw, feature="nope")
    expect_error("unknown_product", c.check_license, product="nope", license_key=key, hardware_id=hw)
    expect_error("signature_mismatch", client(shared_key="wrong").check_license, product="studio", license_key=key, hardware_id=hw)

    out = c.deactivate_license(product="studio", license_key=key, hardware_id=hw)
    assert "deactivated" in out, out
    expect_error("device_not_found", c.check_license, product="studio", license_key=key, hardware_id=hw)
    print("sdk: all calls passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report and fail
        import traceback

        traceback.print_exc()
        print(f"sdk: FAILED: {e!r}", file=sys.stderr)
        sys.exit(1)
