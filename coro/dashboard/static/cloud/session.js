// The signed-in session of the team page.
//
// The access token lives in memory only (it is sent on every call and lasts minutes);
// the refresh token is kept in sessionStorage, so a reload of this tab stays signed in
// while another tab, a closed tab or another site's page never sees it (localStorage
// would keep it on the disk for every later visit). A reload spends the refresh token
// on a new pair (the cloud rotates them). All refreshes of a tab share one request: the
// cloud treats a second use of a rotated refresh token as theft and ends the session.

import { ApiError, Client } from "../js/api.js";

const REFRESH_KEY = "coro.cloud.refreshToken";

let access = null;
let refreshing = null;

/** Listeners told when the session has ended (signed out, or it cannot be renewed). */
export const onSignedOut = new Set();

function keep(tokens) {
  access = tokens.accessToken;
  sessionStorage.setItem(REFRESH_KEY, tokens.refreshToken);
}

function forget() {
  access = null;
  sessionStorage.removeItem(REFRESH_KEY);
}

/** POST without a bearer token (signing in, refreshing): a 401 here is an answer. */
async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** A new token pair from the stored refresh token; true when it worked. */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const stored = sessionStorage.getItem(REFRESH_KEY);
      if (!stored) return false;
      try {
        keep(await postJson("/auth/refresh", { refreshToken: stored }));
        return true;
      } catch (error) {
        // the cloud refused it (expired, revoked): the session is over; a network
        // failure keeps it for the next try
        if (error instanceof ApiError && error.status < 500) {
          forget();
          onSignedOut.forEach((listener) => listener());
        }
        return false;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** The cloud's API, as the signed-in user. */
export const cloud = new Client({ token: () => access, refresh });

export function signedIn() {
  return access !== null;
}

export async function signIn(email, password) {
  keep(await postJson("/auth/login", { email, password }));
}

export async function signUp(email, name, password) {
  keep(await postJson("/auth/signup", { email, name, password }));
}

/** Resumes this tab's session after a reload; true when signed in. */
export async function resume() {
  return signedIn() || (sessionStorage.getItem(REFRESH_KEY) !== null && (await refresh()));
}

export async function signOut() {
  const stored = sessionStorage.getItem(REFRESH_KEY);
  forget();
  if (stored) {
    try {
      await postJson("/auth/logout", { refreshToken: stored });
    } catch {
      /* the tokens are gone from this tab either way */
    }
  }
  onSignedOut.forEach((listener) => listener());
}
