// Test OpenID Connect provider for hpcgate's integration tests (started by ../oidc.sh).
//
// Built on oidc-provider 8.8.1 with:
//   - one confidential client (client_secret_basic) with authorization_code (PKCE S256 required),
//     refresh_token and client_credentials;
//   - access tokens as RS256 JWTs for the resource OIDC_RESOURCE (default urn:hpcgate), also when
//     the client names no resource;
//   - a login form of our own (#username, #password, #submit) that knows only alice and bob:
//     the built-in dev login accepts any password and pulls fonts from the internet;
//   - consent given automatically (a first-party client);
//   - claims preferred_username, email, groups in the ID token and in user access tokens;
//   - RP-initiated logout (end_session_endpoint), confirmed automatically in a browser;
//   - test-only endpoints under /test/ (loopback clients only):
//       POST /test/rotate-key[?kid=K][&retire=1]  new signing key first in JWKS; retire=1 drops
//                                                 the old ones (tokens they signed stop verifying)
//       POST /test/client  {"redirect_uris":[…],"post_logout_redirect_uris":[…]}
//                                                 replace the client's registered URIs
//       GET  /test/stats                          request counts per path (e.g. /jwks, /token)
//
// Configuration comes from the environment (see ../oidc.sh). Sessions, codes and tokens live in
// oidc-provider's in-memory store, which is shared by every Provider instance in this process,
// so rebuilding the Provider (key rotation, new redirect URIs) keeps logins and tokens valid.

import crypto from 'node:crypto';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const env = process.env;
const PORT = Number(env.PORT);
if (!Number.isInteger(PORT) || PORT <= 0) {
  console.error('PORT must be set');
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${PORT}`;
const RESOURCE = env.OIDC_RESOURCE || 'urn:hpcgate';
const RESOURCE_SCOPES = env.OIDC_RESOURCE_SCOPES || 'api';
const ACCESS_TTL = Number(env.OIDC_ACCESS_TOKEN_TTL || 3600);
const CLIENT_ID = env.OIDC_CLIENT_ID || 'gateway';
const CLIENT_SECRET = env.OIDC_CLIENT_SECRET || 'gateway-secret';
const list = (s, dflt) => (s || dflt).split(',').map((x) => x.trim()).filter(Boolean);
let redirectUris = list(env.OIDC_REDIRECT_URIS, 'http://127.0.0.1:8080/callback');
let postLogoutRedirectUris = list(env.OIDC_POST_LOGOUT_REDIRECT_URIS, 'http://127.0.0.1:8080/');

const USERS = {
  alice: {
    password: env.ALICE_PASSWORD || 'alice-pw-1',
    name: 'Alice Archer',
    email: 'alice@example.org',
    groups: list(env.OIDC_ALICE_GROUPS, 'hpc-admins,hpc-users'),
  },
  bob: {
    password: env.BOB_PASSWORD || 'bob-pw-2',
    name: 'Bob Baker',
    email: 'bob@example.org',
    groups: list(env.OIDC_BOB_GROUPS, 'hpc-users'),
  },
};

// ---- signing keys ---------------------------------------------------------------------------

function newKey(kid) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

// keys[0] signs; the rest are still published in /jwks so earlier tokens keep verifying.
let keys = [newKey(env.OIDC_KID || 'test-key-1')];
let rotations = 0;

// ---- provider -------------------------------------------------------------------------------

const html = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${html(title)}</title></head>
<body><h1>${html(title)}</h1>${body}</body></html>`;

function userClaims(id) {
  const u = USERS[id];
  return {
    preferred_username: id, name: u.name, email: u.email, email_verified: true, groups: u.groups,
  };
}

function configuration() {
  return {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys },
    cookies: { keys: ['hpcgate-test-oidc-cookie-key'] },
    pkce: { methods: ['S256'], required: () => true },
    // The gateway asks for `openid` (plus maybe profile/email/groups): give the identity claims
    // it needs with `openid` alone, and the usual ones with their usual scopes.
    claims: {
      openid: ['sub', 'preferred_username', 'email', 'groups'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', ...RESOURCE_SCOPES.split(' ')],
    conformIdTokenClaims: false, // claims go into the ID token, not only to userinfo
    async findAccount(ctx, id) {
      if (!USERS[id]) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...userClaims(id) }) };
    },
    // User access tokens carry the identity claims too; client_credentials tokens do not.
    async extraTokenClaims(ctx, token) {
      if (token.accountId && USERS[token.accountId]) return userClaims(token.accountId);
      return undefined;
    },
    // Refresh tokens for every code exchange, not only with offline_access + prompt=consent.
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    ttl: {
      AccessToken: ACCESS_TTL,
      ClientCredentials: ACCESS_TTL,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => (oneOf ? oneOf[0] : RESOURCE),
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, indicator) {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
          return {
            scope: RESOURCE_SCOPES,
            audience: RESOURCE,
            accessTokenTTL: ACCESS_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        // Auto-confirm, so a browser following end_session_endpoint comes straight back to
        // post_logout_redirect_uri. curl clients can POST the form themselves.
        async logoutSource(ctx, form) {
          ctx.body = page('Sign out', `${form}
<button id="logout" type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button>
<script>document.getElementById('logout').click()</script>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<p id="signed-out">You are signed out.</p>');
        },
      },
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', Object.entries(out)
        .map(([k, v]) => `<pre id="${html(k)}">${html(k)}: ${html(v)}</pre>`).join(''));
    },
  };
}

function build() {
  const p = new Provider(ISSUER, configuration());
  p.on('server_error', (ctx, err) => console.error('server_error', err));
  return p;
}

// The Provider and its request handler, swapped as a pair by rebuild().
let provider;
let handler;
function rebuild() {
  provider = build();
  handler = provider.callback();
}
rebuild();

// ---- our own HTTP front: login/consent interactions and test endpoints -----------------------

const stats = {};

function loginForm(uid, error) {
  return page('Sign in', `
${error ? `<p id="error">${html(error)}</p>` : ''}
<form method="post" action="/interaction/${html(uid)}/login" autocomplete="off">
  <label>Username <input id="username" name="username" autofocus></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="submit" type="submit">Sign in</button>
</form>`);
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

// Approve whatever the (first-party) client asked for, as the oidc-provider example app does.
async function autoConsent(req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  let { grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  grantId = await grant.save();
  const consent = details.grantId ? {} : { grantId };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return send(res, 404, 'text/plain', 'not found\n');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== m[1]) return send(res, 400, 'text/plain', 'interaction mismatch\n');

  if (req.method === 'GET') {
    if (details.prompt.name === 'login') return send(res, 200, 'text/html', loginForm(details.uid));
    if (details.prompt.name === 'consent') return autoConsent(req, res, details);
    return send(res, 400, 'text/plain', `unsupported prompt ${details.prompt.name}\n`);
  }
  if (req.method === 'POST' && m[2]) {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') || '';
    const user = Object.hasOwn(USERS, username) ? USERS[username] : undefined;
    const given = Buffer.from(form.get('password') || '');
    const ok = user && given.length === Buffer.byteLength(user.password)
      && crypto.timingSafeEqual(given, Buffer.from(user.password));
    if (!ok) return send(res, 401, 'text/html', loginForm(details.uid, 'Invalid username or password.'));
    return provider.interactionFinished(req, res, { login: { accountId: username } },
      { mergeWithLastSubmission: false });
  }
  return send(res, 405, 'text/plain', 'method not allowed\n');
}

async function testEndpoint(req, res, url) {
  if (req.method === 'POST' && url.pathname === '/test/rotate-key') {
    rotations += 1;
    const kid = url.searchParams.get('kid') || `${env.OIDC_KID || 'test-key-1'}-r${rotations}`;
    if (keys.some((k) => k.kid === kid)) return send(res, 409, 'text/plain', `kid ${kid} exists\n`);
    keys = url.searchParams.get('retire') === '1' ? [newKey(kid)] : [newKey(kid), ...keys];
    rebuild();
    console.log(`rotated signing key: now ${kid}; published ${keys.map((k) => k.kid).join(',')}`);
    return send(res, 200, 'application/json', `${JSON.stringify({ kid, kids: keys.map((k) => k.kid) })}\n`);
  }
  if (req.method === 'POST' && url.pathname === '/test/client') {
    const body = JSON.parse((await readBody(req)) || '{}');
    if (body.redirect_uris) redirectUris = body.redirect_uris;
    if (body.post_logout_redirect_uris) postLogoutRedirectUris = body.post_logout_redirect_uris;
    rebuild();
    return send(res, 200, 'application/json', `${JSON.stringify({
      redirect_uris: redirectUris, post_logout_redirect_uris: postLogoutRedirectUris,
    })}\n`);
  }
  if (req.method === 'GET' && url.pathname === '/test/stats') {
    return send(res, 200, 'application/json', `${JSON.stringify(stats)}\n`);
  }
  return send(res, 404, 'text/plain', 'not found\n');
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, ISSUER);
  const route = url.pathname.replace(/^\/(interaction|auth)\/[^/]+/, '/$1/:uid');
  stats[route] = (stats[route] || 0) + 1;
  res.on('finish', () => console.log(`${new Date().toISOString()} ${req.method} ${url.pathname} ${res.statusCode}`));
  try {
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res, url);
    if (url.pathname.startsWith('/test/')) {
      if (!LOOPBACK.test(req.socket.remoteAddress || '')) return send(res, 403, 'text/plain', 'forbidden\n');
      return await testEndpoint(req, res, url);
    }
    return handler(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, err.statusCode || 500, 'text/plain', `${err.name}: ${err.message}\n`);
    else res.end();
  }
});

server.listen(PORT, '127.0.0.1', () => console.log(`oidc test provider listening on ${ISSUER}`));
// Exit at once on SIGTERM: keep-alive connections would otherwise hold server.close().
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
