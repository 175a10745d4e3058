// The reference page: sign-in, MFA, factor management and step-up over the service's HTTP API.
// Tokens live only in this script's memory, so a reload signs the user out.
"use strict";

const state = {
  accessToken: null,
  refreshToken: null,
  mfaToken: null,
  enrollmentToken: null,
  account: "",
  factors: [],
  pendingTotpId: null,
  qrUrl: null,
  stepUp: null, // {resolve, reject} while the step-up prompt waits for the user
};

// Milliseconds a ceremony may take when the server's options name no timeout.
const DEFAULT_CEREMONY_TIMEOUT_MS = 120000;

const byId = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `The server returned HTTP ${status}.`);
    this.status = status;
    this.code = problem && problem.code;
    this.problem = problem;
  }
}

// ---- HTTP ----

async function api(method, path, { token, body } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Call the API with the access token, refreshing the token pair once when it has expired.
async function authorized(method, path, body) {
  if (!state.accessToken) return api(method, path, { token: state.enrollmentToken, body });
  try {
    return await api(method, path, { token: state.accessToken, body });
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "invalid_token" && state.refreshToken)) {
      throw error;
    }
    const pair = await api("POST", "/v1/auth/refresh", {
      body: { refresh_token: state.refreshToken },
    });
    state.accessToken = pair.access_token;
    state.refreshToken = pair.refresh_token;
    return api(method, path, { token: state.accessToken, body });
  }
}

// ---- Status and views ----

function showStatus(message, kind) {
  const status = byId("status");
  status.textContent = message;
  status.className = kind;
  status.hidden = false;
}

function clearStatus() {
  const status = byId("status");
  status.textContent = "";
  status.hidden = true;
}

function describeError(error) {
  if (error instanceof ApiError) return error.message;
  switch (error && error.name) {
    case "NotAllowedError":
      return "The security key operation was cancelled, timed out or not allowed.";
    case "InvalidStateError":
      return "This security key is already registered for your account.";
    case "SecurityError":
      return "The browser rejected the request because this page's origin does not match the relying party ID.";
    case "AbortError":
    case "TimeoutError":
      return "The security key did not respond in time.";
    case "NotSupportedError":
      return "This security key supports none of the requested algorithms.";
    default:
      return (error && error.message) || String(error);
  }
}

const VIEWS = {
  signin: ["signin-view"],
  mfa: ["mfa-view"],
  enroll: ["enroll-view", "add-factor-view"],
  account: ["account-view", "add-factor-view"],
};

function showView(name) {
  const visible = new Set(VIEWS[name]);
  for (const id of new Set(Object.values(VIEWS).flat())) byId(id).hidden = !visible.has(id);
  document.body.dataset.view = name;
}

// Wrap an event handler: stop the default action, disable the control while the request runs,
// and show any failure in the status area.
function handler(action) {
  return async (event) => {
    event.preventDefault();
    const control = event.submitter || event.currentTarget;
    if (control.disabled) return;
    control.disabled = true;
    clearStatus();
    try {
      await action(event);
    } catch (error) {
      showStatus(describeError(error), "error");
    } finally {
      control.disabled = false;
    }
  };
}

function fillFactorSelect(select, factors) {
  select.replaceChildren(
    ...factors.map((factor) => new Option(factor.label || factor.factor_id, factor.factor_id)),
  );
}

// ---- Security keys ----

function requireJsonWebAuthn() {
  const credential = window.PublicKeyCredential;
  if (!credential || typeof credential.parseCreationOptionsFromJSON !== "function") {
    throw new Error("This browser does not support security keys with JSON options (WebAuthn Level 3).");
  }
}

// Run one navigator.credentials call, and abort it when the authenticator never responds.
async function ceremony(options, start) {
  const controller = new AbortController();
  const timeoutMs = (options.timeout || DEFAULT_CEREMONY_TIMEOUT_MS) + 5000;
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const credential = await start(controller.signal);
    if (!credential) throw new Error("The browser returned no credential.");
    return credential;
  } finally {
    clearTimeout(timer);
  }
}

function createCredential(options) {
  requireJsonWebAuthn();
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
  return ceremony(options, (signal) => navigator.credentials.create({ publicKey, signal }));
}

function getCredential(options) {
  requireJsonWebAuthn();
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
  return ceremony(options, (signal) => navigator.credentials.get({ publicKey, signal }));
}

// Prove possession of one of the user's keys. `token` is the mfa_token at sign-in, or the
// access token for a step-up.
async function verifyWithKey(token) {
  const challenge = await api("POST", "/v1/auth/mfa/challenge", { token, body: {} });
  const credential = await getCredential(challenge.options);
  return api("POST", "/v1/auth/mfa/verify", {
    token,
    body: { challenge_id: challenge.challenge_id, credential: credential.toJSON() },
  });
}

async function registerKey() {
  const label = byId("key-label").value.trim() || undefined;
  const created = await authorized("POST", "/v1/me/factors/webauthn/options", { label });
  const credential = await createCredential(created.options);
  return authorized("POST", "/v1/me/factors/webauthn", {
    challenge_id: created.challenge_id,
    credential: credential.toJSON(),
    label,
  });
}

// ---- Sign-in ----

function handleLogin(result) {
  if (result.status === "authenticated") return startSession(result);
  if (result.status === "enrollment_required") {
    state.enrollmentToken = result.enrollment_token;
    // Offer only the methods that the org's policy (and the token) allow.
    const allowed = result.allowed_methods || ["totp", "webauthn"];
    byId("totp-enroll-form").hidden = !allowed.includes("totp");
    byId("key-register-form").hidden = !allowed.includes("webauthn");
    byId("enroll-key-required").hidden = result.next_step !== "register_security_key";
    showView("enroll");
    return undefined;
  }
  if (result.status !== "mfa_required") {
    throw new Error(`The server returned an unknown login status: ${result.status}`);
  }
  state.mfaToken = result.mfa_token;
  const keys = result.factors.filter((factor) => factor.type === "webauthn");
  const apps = result.factors.filter((factor) => factor.type === "totp");
  byId("mfa-key-button").hidden = keys.length === 0;
  byId("mfa-totp-form").hidden = apps.length === 0;
  fillFactorSelect(byId("mfa-totp-factor"), apps);
  byId("mfa-totp-code").value = "";
  showView("mfa");
  return undefined;
}

// The account view appears once its factor table is loaded.
async function startSession(result) {
  byId("totp-enroll-form").hidden = false;
  byId("key-register-form").hidden = false;
  state.accessToken = result.access_token;
  state.refreshToken = result.refresh_token;
  state.mfaToken = null;
  state.enrollmentToken = null;
  byId("account-name").textContent = `Signed in as ${state.account}.`;
  await loadFactors();
  showView("account");
}

function signOut() {
  Object.assign(state, {
    accessToken: null,
    refreshToken: null,
    mfaToken: null,
    enrollmentToken: null,
    factors: [],
    pendingTotpId: null,
  });
  closeStepUp(new Error("Signed out, so the change was not made."));
  resetTotpSetup();
  byId("factors-body").replaceChildren();
  byId("backup-codes-list").replaceChildren();
  byId("backup-codes").hidden = true;
  showView("signin");
}

// ---- Factors ----

function formatTime(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toLocaleString() : "never";
}

function factorRow(factor) {
  const row = document.createElement("tr");
  row.id = `factor-${factor.factor_id}`;
  row.dataset.factorId = factor.factor_id;
  row.dataset.type = factor.type;
  const cells = {
    type: factor.type === "webauthn" ? "Security key" : "Authenticator app",
    label: factor.label || "",
    status: factor.status,
    "sign-count": factor.type === "webauthn" ? String(factor.sign_count ?? "") : "",
    "last-used": formatTime(factor.last_used_at),
  };
  for (const [name, text] of Object.entries(cells)) {
    const cell = row.insertCell();
    cell.className = `factor-${name}`;
    cell.textContent = text;
  }

  const notes = row.insertCell();
  notes.className = "factor-notes";
  if (factor.clone_suspected) {
    const warning = document.createElement("span");
    warning.className = "clone-warning";
    warning.textContent = "Possible clone: this key's signature counter went backwards.";
    notes.append(warning);
  }

  const remove = document.createElement("button");
  remove.type = "button";
  remove.id = `remove-${factor.factor_id}`;
  remove.className = "factor-remove";
  remove.textContent = "Remove";
  remove.addEventListener("click", handler(() => removeFactor(factor)));
  row.insertCell().append(remove);
  return row;
}

async function loadFactors() {
  const result = await authorized("GET", "/v1/me/factors");
  state.factors = result.factors;
  const rows = state.factors.map(factorRow);
  byId("factors-body").replaceChildren(...rows);
  byId("factors-empty").hidden = rows.length > 0;
}

async function removeFactor(factor) {
  const path = `/v1/me/factors/${encodeURIComponent(factor.factor_id)}`;
  await withStepUp(() => authorized("DELETE", path));
  await loadFactors();
  showStatus(`Removed ${factor.label || factor.factor_id}.`, "info");
}

function resetTotpSetup() {
  if (state.qrUrl) URL.revokeObjectURL(state.qrUrl);
  state.qrUrl = null;
  state.pendingTotpId = null;
  byId("totp-qr").removeAttribute("src");
  byId("totp-secret").textContent = "";
  byId("totp-confirm-code").value = "";
  byId("totp-setup").hidden = true;
}

async function enrollTotp() {
  const label = byId("totp-label").value.trim() || undefined;
  const created = await withStepUp(() => authorized("POST", "/v1/me/factors/totp", { label }));
  resetTotpSetup();
  state.pendingTotpId = created.factor_id;
  // The SVG is shown as an image, never parsed into this document.
  state.qrUrl = URL.createObjectURL(new Blob([created.qr_svg], { type: "image/svg+xml" }));
  byId("totp-qr").src = state.qrUrl;
  byId("totp-secret").textContent = created.secret;
  byId("totp-setup").hidden = false;
}

async function confirmTotp() {
  const code = byId("totp-confirm-code").value.trim();
  const path = `/v1/me/factors/totp/${encodeURIComponent(state.pendingTotpId)}/confirm`;
  const confirmed = await withStepUp(() => authorized("POST", path, { code }));
  resetTotpSetup();
  await factorAdded(confirmed);
}

// Show backup codes, which the API returns once: with the first factor, or when regenerated.
function showBackupCodes(codes) {
  const list = byId("backup-codes-list");
  list.replaceChildren(
    ...codes.map((code) => {
      const item = document.createElement("li");
      item.textContent = code;
      return item;
    }),
  );
  byId("backup-codes").hidden = false;
}

async function factorAdded(factor) {
  const name = factor.label || factor.factor_id;
  if (Array.isArray(factor.backup_codes)) showBackupCodes(factor.backup_codes);
  if (state.accessToken) {
    await loadFactors();
    showStatus(`Added ${name}.`, "info");
  } else {
    // An enrollment token is spent once the user has a factor, so the user signs in again.
    state.enrollmentToken = null;
    showView("signin");
    showStatus(`Added ${name}. Sign in again and confirm with it.`, "info");
  }
}

// ---- Step-up ----

// Run `action`, and when the server requires a more recent MFA, prompt for it and run it again.
async function withStepUp(action) {
  try {
    return await action();
  } catch (error) {
    const needsStepUp =
      error instanceof ApiError && error.status === 403 && error.code === "step_up_required";
    if (!needsStepUp || !state.accessToken) throw error;
    // The API's detail is written for developers; the user only needs to know what to do.
    showStatus("Confirm it is you: verify with one of your factors to continue.", "error");
    await openStepUp();
    return action();
  }
}

function openStepUp() {
  const active = state.factors.filter((factor) => factor.status === "active");
  const apps = active.filter((factor) => factor.type === "totp");
  byId("stepup-key-button").hidden = !active.some((factor) => factor.type === "webauthn");
  byId("stepup-totp-form").hidden = apps.length === 0;
  fillFactorSelect(byId("stepup-totp-factor"), apps);
  byId("stepup-totp-code").value = "";
  byId("stepup-view").hidden = false;
  return new Promise((resolve, reject) => {
    state.stepUp = { resolve, reject };
  });
}

function closeStepUp(error) {
  byId("stepup-view").hidden = true;
  const pending = state.stepUp;
  state.stepUp = null;
  if (pending && error) pending.reject(error);
  if (pending && !error) pending.resolve();
}

function finishStepUp(result) {
  if (result.status !== "verified") {
    throw new Error(`The server returned an unknown step-up status: ${result.status}`);
  }
  state.accessToken = result.access_token;
  clearStatus();
  closeStepUp(null);
}

// ---- Wiring ----

function on(id, type, action) {
  byId(id).addEventListener(type, handler(action));
}

on("signin-form", "submit", async () => {
  const orgId = byId("org-id").value.trim();
  const email = byId("email").value.trim();
  const body = { org_id: orgId, email, password: byId("password").value };
  const result = await api("POST", "/v1/auth/login", { body });
  byId("password").value = "";
  state.account = `${email} (${orgId})`;
  await handleLogin(result);
});

// A verification returns what a login does: a session, or enrollment when a key must be added.
on("mfa-key-button", "click", async () => handleLogin(await verifyWithKey(state.mfaToken)));

on("mfa-totp-form", "submit", async () => {
  const body = {
    factor_id: byId("mfa-totp-factor").value,
    code: byId("mfa-totp-code").value.trim(),
  };
  await handleLogin(await api("POST", "/v1/auth/mfa/verify", { token: state.mfaToken, body }));
});

on("mfa-cancel", "click", signOut);
on("enroll-cancel", "click", signOut);
on("factors-refresh", "click", loadFactors);

on("logout-button", "click", async () => {
  try {
    // Through authorized(), so that an expired access token is refreshed and the session on
    // the server ends too.
    await authorized("POST", "/v1/auth/logout");
  } finally {
    signOut();
  }
  showStatus("Logged out.", "info");
});

on("totp-enroll-form", "submit", enrollTotp);
on("totp-confirm-form", "submit", confirmTotp);
on("key-register-form", "submit", async () => factorAdded(await withStepUp(registerKey)));

on("stepup-key-button", "click", async () => finishStepUp(await verifyWithKey(state.accessToken)));

on("stepup-totp-form", "submit", async () => {
  const body = {
    factor_id: byId("stepup-totp-factor").value,
    code: byId("stepup-totp-code").value.trim(),
  };
  finishStepUp(await api("POST", "/v1/auth/mfa/verify", { token: state.accessToken, body }));
});

on("stepup-cancel", "click", () => closeStepUp(new Error("Step-up cancelled, so nothing was changed.")));

showView("signin");
