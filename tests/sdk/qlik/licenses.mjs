// Qlik's own client library, unchanged, pointed at Tally with an API-key host
// config. Run by tests/qlik_sdk.rs with TALLY_ADDR and TALLY_QLIK_API_KEY set;
// prints "sdk: all calls passed" when every call behaved as the vendor's API.
import { setDefaultHostConfig } from "@qlik/api/auth";
import {
  addLicenseAssignments,
  deleteLicenseAssignments,
  getLicenseAssignments,
  getLicenseConsumption,
  getLicenseOverview,
  getLicenseSettings,
  getLicenseStatus,
  updateLicenseAssignments,
  updateLicenseSettings,
  clearCache,
} from "@qlik/api/licenses";
import assert from "node:assert/strict";

const host = `http://${process.env.TALLY_ADDR}`;
setDefaultHostConfig({ host, authType: "apikey", apiKey: process.env.TALLY_QLIK_API_KEY });

const step = (name) => console.log(`sdk: ${name}`);

step("overview");
const overview = await getLicenseOverview();
assert.equal(overview.status, 200);
assert.equal(overview.data.licenseNumber, "9999000000001204");
const pro = overview.data.allotments.find((a) => a.name === "professional");
assert.equal(pro.usageClass, "assigned");
assert.equal(pro.unitsUsed, 1);

step("status");
const status = await getLicenseStatus();
assert.equal(status.data.status, "Ok");
assert.equal(status.data.type, "Signed");

step("settings");
assert.deepEqual((await getLicenseSettings()).data, { autoAssignAnalyzer: true, autoAssignProfessional: false });
const put = await updateLicenseSettings({ autoAssignAnalyzer: false, autoAssignProfessional: true });
assert.deepEqual(put.data, { autoAssignAnalyzer: false, autoAssignProfessional: true });

step("add");
const add = await addLicenseAssignments({
  add: [
    { type: "professional", subject: "qlik\\olle" },
    { type: "analyzer", subject: "qlik\\kalle" },
    ...Array.from({ length: 10 }, (_, i) => ({ type: "analyzer", subject: `sdk\\user${i}` })),
  ],
});
assert.equal(add.status, 207);
assert.deepEqual(add.data.data[0], { type: "professional", subject: "qlik\\olle", status: 201 });
assert.equal(add.data.data[1].status, 409);
assert.equal(add.data.data[1].code, "LICENSES-012");

step("update");
const upd = await updateLicenseAssignments({
  update: [
    { type: "analyzer", subject: "qlik\\olle", sourceType: "professional" },
    { subject: "qlik\\sara", sourceSubject: "qlik\\nalle" },
    { type: "professional", subject: "qlik/none", sourceType: "analyzer" },
  ],
});
assert.equal(upd.status, 207);
assert.deepEqual(upd.data.data.map((d) => d.status), [200, 201, 404]);
assert.equal(upd.data.data[2].code, "LICENSES-016");

step("delete");
const del = await deleteLicenseAssignments({ delete: [{ type: "analyzer", subject: "qlik\\olle" }, { type: "analyzer", subject: "qlik\\no" }] });
assert.deepEqual(del.data.data.map((d) => d.status), [200, 404]);

step("assignments with paging functions");
clearCache();
let page = await getLicenseAssignments({ limit: 4, sort: "+subject", filter: 'subject sw "sdk"' });
const seen = [];
for (;;) {
  seen.push(...page.data.data.map((a) => a.subject));
  if (!page.next) break;
  page = await page.next();
}
assert.deepEqual(seen, Array.from({ length: 10 }, (_, i) => `sdk\\user${i}`));
assert.ok(page.prev, "the last page links back");
const back = await page.prev();
assert.equal(back.data.data.length, 4);

step("orphans and bad filter");
const orphans = await getLicenseAssignments({ orphans: true, limit: 100 });
// The demo tenant's users are qlik\\kalle, nalle, malik and sara: the sdk subjects are orphans.
assert.deepEqual(orphans.data.data.map((a) => a.subject).sort(), seen);
await assert.rejects(getLicenseAssignments({ filter: "subject eq" }), (e) => {
  assert.equal(e.status, 400);
  assert.equal(e.data.errors[0].code, "LICENSES-009");
  return true;
});

step("consumption");
const cons = await getLicenseConsumption({ limit: 10, sort: "-endTime" });
assert.equal(cons.status, 200);
assert.equal(cons.data.data.length, 2);
assert.equal(cons.data.data[0].minutesUsed, 12);
assert.equal(cons.data.data[0].duration, "PT9M");

step("errors as the vendor's");
const ro = { host, authType: "apikey", apiKey: process.env.TALLY_QLIK_READONLY_KEY };
await assert.rejects(addLicenseAssignments({ add: [] }, { hostConfig: ro }), (e) => {
  assert.equal(e.status, 403);
  assert.equal(e.data.errors[0].title, "Insufficient access");
  return true;
});

step("an injected fault (Tally's harness)");
if (process.env.TALLY_ADMIN_TOKEN) {
  const faults = (method, body) =>
    fetch(`${host}/admin/v1/faults`, {
      method,
      headers: { Authorization: `Bearer ${process.env.TALLY_ADMIN_TOKEN}`, "Content-Type": "application/json" },
      body: body && JSON.stringify(body),
    });
  const set = await faults("PUT", {
    rules: [{ surface: "qlik", endpoint: "/api/v1/licenses/status", count: 1,
              effect: { type: "error", status: 429, retry_after_s: 1 } }],
  });
  assert.equal(set.status, 200);
  clearCache();
  await assert.rejects(getLicenseStatus(), (e) => {
    assert.equal(e.status, 429);
    assert.equal(e.data.errors[0].code, "LICENSES-005");
    return true;
  });
  clearCache();
  assert.equal((await getLicenseStatus()).status, 200, "the rule's one hit is spent");
  assert.equal((await faults("DELETE")).status, 204);
}

console.log("sdk: all calls passed");
