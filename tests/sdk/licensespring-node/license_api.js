// Drives Tally with LicenseSpring's own Node.js SDK (@licensespring/node-sdk),
// unchanged: its LicenseAPI and LicenseManager pointed at
// http://TALLY_ADDR/api/v4 with Tally's public key, so every call verifies
// license_signature (v1) and LicenseSignature (v2) as it would against
// LicenseSpring. Every signed body is also checked to be a fixed point of
// JSON.stringify(JSON.parse(body)), which is what the SDK verifies.
//
// Environment: TALLY_ADDR (host:port), TALLY_PUBLIC_KEY_PEM (path). Uses the
// demo catalog (examples/demo.json). Exits non-zero on the first failure.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const axios = require('axios');
const { LicenseAPI, LicenseManager } = require('@licensespring/node-sdk');

const ADDR = process.env.TALLY_ADDR;
const PUBLIC_KEY = fs.readFileSync(process.env.TALLY_PUBLIC_KEY_PEM, 'utf8');
const API_PATH = `http://${ADDR}/api/v4`;

// The SDK uses axios' default instance: look at every raw body first.
let signedBodies = 0;
let lastBody = '';
axios.defaults.transformResponse.unshift(function (data, headers) {
  lastBody = data;
  const signature = headers && (headers.get ? headers.get('licensesignature') : headers.licensesignature);
  if (signature && typeof data === 'string' && data.length > 0) {
    assert.equal(JSON.stringify(JSON.parse(data)), data, 'a signed body is not what JSON.stringify writes');
    signedBodies += 1;
  }
  return data;
});

const config = (extra = {}) => ({
  apiKey: 'demo-api-key',
  sharedKey: 'demo-shared-key',
  apiPath: API_PATH,
  publicKey: PUBLIC_KEY,
  appName: 'tally-node-sdk-test',
  appVersion: '1.0.0',
  ...extra,
});

async function expectError(code, promise) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e && e.code, code, `expected ${code}, got ${JSON.stringify(e)}`);
    return e;
  }
  throw new Error(`expected error ${code}, the call succeeded`);
}

const calls = [];
let offlineLicenseFile = '';
function step(name) {
  calls.push(name);
}

async function licenseApi() {
  const c = new LicenseAPI(config());
  const product = 'studio';
  const key = 'DEMO-STUDIO-0001';
  const hw = 'node-device-1';
  const id = { product, license_key: key, hardware_id: hw };

  let lic = await c.activateLicense({ ...id, variables: { seat: 'N1' } });
  assert.equal(lic.license_key, key);
  assert.equal(lic.times_activated, 2);
  step('activateLicense');

  lic = await c.checkLicense(id);
  assert.equal(lic.license_active, true);
  lic = await c.checkLicense({ ...id, env: 'win64', channel: 'prod' }, true);
  assert.equal(lic.version, '1.1.0');
  assert.equal(lic.environment, 'win64');
  step('checkLicense');

  let f = await c.checkLicenseFeature({ ...id, feature: 'export-4k' });
  assert.equal(f.floating_in_use_devices, 1);
  step('checkLicenseFeature');
  assert.equal(await c.featureRelease({ ...id, feature: 'export-4k' }), true);
  step('featureRelease');
  const until = new Date(Date.now() + 3600 * 1000).toISOString();
  f = await c.featureBorrow({ ...id, feature: 'export-4k', borrowed_until: until });
  assert.equal(f.borrowed_until, until);
  assert.equal(f.license_id, lic.id);
  step('featureBorrow');
  f = await c.addFeatureConsumption({ ...id, feature: 'ai-credits', consumptions: 3 });
  assert.equal(f.total_consumptions, 3);
  step('addFeatureConsumption');

  const vars = await c.trackDeviceVariables({ ...id, variables: { os: 'linux' } });
  assert.ok(Array.isArray(vars));
  const got = await c.getDeviceVariables(id);
  assert.deepEqual(got.map((v) => [v.variable, v.value]).sort(), [['os', 'linux'], ['seat', 'N1']]);
  step('trackDeviceVariables');
  step('getDeviceVariables');

  const details = await c.getProductDetails({ product, include_latest_version: true, include_custom_fields: true });
  assert.equal(details.short_code, product);
  assert.equal(details.latest_version.version, '2.0.0-beta');
  step('getProductDetails');

  const versions = await c.getVersions({ ...id, env: 'linux' });
  assert.deepEqual(versions.map((v) => v.version), ['1.0.0', '1.1.0']);
  step('getVersions');
  const file = await c.getInstallationFile({ ...id, env: 'win64', version: '1.0.0' });
  assert.equal(file.installation_file, 'https://downloads.example.com/studio/1.0.0/studio-1.0.0-win64.zip');
  assert.equal(file.hash_md5, '9e107d9d372bb6826bd81d3542a419d6');
  step('getInstallationFile');
  await expectError('version_not_found', c.getInstallationFile({ ...id, version: '9.9.9' }));

  // A floating license (the test lets it borrow for 24 hours): a seat taken
  // by the activation, given back, then borrowed.
  const fl = { product, license_key: 'DEMO-FLOAT-0001', hardware_id: hw };
  lic = await c.activateLicense(fl);
  assert.equal(lic.floating_in_use_devices, 1);
  assert.equal(await c.floatingRelease(fl), true);
  step('floatingRelease');
  const borrowed = await c.floatingBorrow({ ...fl, borrowed_until: until });
  assert.deepEqual(Object.keys(borrowed).sort(), ['borrowed_until', 'company', 'device_id', 'license_id', 'max_borrow_time']);
  assert.equal(borrowed.borrowed_until, until);
  assert.equal(borrowed.max_borrow_time, 24);
  step('floatingBorrow');
  await expectError('license_not_floating', c.floatingBorrow({ ...id, borrowed_until: until }));

  // A consumption license.
  const meter = { product, license_key: 'DEMO-METER-0001', hardware_id: hw };
  await c.activateLicense(meter);
  lic = await c.addConsumption({ ...meter, consumptions: 5 });
  assert.equal(lic.total_consumptions, 5);
  step('addConsumption');

  // Trials: a new one, then the same one again.
  const trial = await c.getTrialKey({ product, hardware_id: 'node-trial-1', email: 'trial@example.com' });
  assert.equal(trial.is_trial, true);
  const again = await c.getTrialKey({ product, hardware_id: 'node-trial-1' });
  assert.equal(again.license_key, trial.license_key);
  step('getTrialKey');

  // User-based: the license signature covers the user and a validity period
  // (2031-03-16), which the SDK reads as dayjs(validity).toISOString().
  const user = { product: 'cloud', username: 'alice@example.com', hardware_id: hw };
  lic = await c.activateLicense({ ...user, password: 'alice-password' });
  assert.equal(lic.validity_period, '2031-03-16');
  lic = await c.checkLicense(user);
  assert.equal(lic.user.email, 'alice@example.com');
  const mine = await c.getUserLicenses({ username: 'alice@example.com', password: 'alice-password', product: 'cloud' });
  assert.equal(mine.length, 1);
  step('getUserLicenses');
  const users = await c.getCustomerLicenseUsers({ product: 'cloud', customer: 'buyer@example.com' });
  assert.equal(users.users[0].email, 'alice@example.com');
  step('getCustomerLicenseUsers');
  assert.equal(await c.changePassword({ username: 'alice@example.com', password: 'alice-password', new_password: 'alice-2' }), true);
  await expectError('wrong_credentials', c.getUserLicenses({ username: 'alice@example.com', password: 'alice-password' }));
  assert.equal(await c.changePassword({ username: 'alice@example.com', password: 'alice-2', new_password: 'alice-password' }), true);
  step('changePassword');
  assert.equal(await c.deactivateLicense(user), true);

  // Tally has no identity provider: SSO answers as for an account without it.
  await expectError('sso_customer_account_url_error', c.getSSOUrl({ product: 'cloud', customer_account_code: 'acme' }));
  step('getSSOUrl');

  // Bundles.
  const suite = { product: 'suite', license_key: 'DEMO-SUITE-0001', hardware_id: hw };
  const activated = await c.activateBundle(suite);
  assert.deepEqual(activated.map((l) => l.product_details.short_code), ['studio', 'viewer']);
  step('activateBundle');
  const checked = await c.checkBundle(suite);
  assert.equal(checked.length, 2);
  step('checkBundle');
  assert.equal(await c.deactivateBundle(suite), true);
  step('deactivateBundle');

  // Offline activation and deactivation through request files.
  const off = { product, license_key: 'DEMO-METER-0001', hardware_id: 'node-offline-1' };
  const request = c.createOfflineActivationPayload(off);
  const answer = await c.activateOffline(request);
  assert.equal(answer.license_key, off.license_key);
  step('activateOffline');
  // The answer saved as a license file loads offline (v1 and v2 checked
  // again, with no server).
  const licenseFile = Buffer.from(lastBody).toString('base64');
  const loaded = c.checkOfflineActivationResponse(licenseFile);
  assert.equal(loaded.hardware_id, off.hardware_id);
  step('checkOfflineActivationResponse');
  offlineLicenseFile = licenseFile;
  assert.equal(await c.deactivateOffline(c.createOfflineDeactivationPayload(off)), true);
  step('deactivateOffline');

  assert.equal(await c.deactivateLicense(id), true);
  step('deactivateLicense');
  await expectError('device_not_found', c.checkLicense(id));

  // Errors the SDK raises from Tally's answers, and its own checks.
  await expectError('signature_mismatch', new LicenseAPI(config({ sharedKey: 'wrong' })).checkLicense(id));
  await expectError('unknown_product', c.checkLicense({ ...id, product: 'nope' }));
  const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' });
  const stranger = new LicenseAPI(config({ publicKey: other }));
  await expectError('signature_v2_mismatch', stranger.getProductDetails({ product }));
  await expectError('license_signature_invalid', stranger.checkLicense({ product, license_key: key, hardware_id: 'demo-laptop' }));
}

async function licenseManager() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-ls-node-'));
  const m = new LicenseManager(config({
    productCode: 'studio',
    hardwareID: 'node-manager-1',
    filePath: dir,
    filename: 'license',
    fileKey: 'tally-test-file-key',
  }));
  const key = { license_key: 'DEMO-STUDIO-0001' };
  let lic = await m.activateLicense(key);
  assert.equal(lic.license_key, key.license_key);
  lic = await m.checkLicense(key);
  assert.equal(lic.license_active, true);
  const f = await m.checkLicenseFeature({ ...key, feature: 'render' });
  assert.equal(f.code, 'render');
  const c = await m.addFeatureConsumption({ ...key, feature: 'ai-credits', consumptions: 2 });
  assert.equal(c.total_consumptions, 5);
  const loaded = await m.loadLicense();
  assert.ok(loaded, 'the license file was written and reads back');
  assert.equal(await m.deactivateLicense(key), true);
  // An offline activation answer loaded by the manager (no network).
  const offline = await m.activateOffline(offlineLicenseFile);
  assert.equal(offline.license_key, 'DEMO-METER-0001');
  step('LicenseManager');
}

(async () => {
  await licenseApi();
  await licenseManager();
  assert.ok(signedBodies > 30, `only ${signedBodies} signed bodies seen`);
  console.log(`sdk: ${calls.length} calls checked (${calls.join(', ')}); ${signedBodies} signed bodies`);
  console.log('sdk: all calls passed');
})().catch((e) => {
  console.error('sdk: FAILED:', e && e.stack ? e.stack : JSON.stringify(e));
  process.exit(1);
});
