// A certified OpenID provider (panva's oidc-provider) for the web sign-in
// tests, with its development login and consent pages.
//
//   node provider.mjs <port> <client_id> <client_secret> <redirect_uri>
//
// OIDC_PROVIDER_MODULE names the installed oidc-provider (its lib/index.js).
// The client may only use the authorization-code flow, with PKCE required.
// Any password signs in these accounts; `nobody` has no Custodian role.
// Prints "ready <issuer>" once listening.
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const { default: Provider } = await import(pathToFileURL(process.env.OIDC_PROVIDER_MODULE).href);

const accounts = {
  rita: { roles: ['researcher'] },
  alice: { roles: ['admin', 'steward'] },
  nobody: { roles: [] },
};

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'roles'],
  claims: { openid: ['sub'], roles: ['roles'] },
  // The roles go into the ID token itself, where Custodian reads them.
  conformIdTokenClaims: false,
  cookies: { keys: ['test-only-cookie-key'] },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, roles: account.roles }; } };
  },
});
provider.on('server_error', (ctx, error) => console.error('server_error', error));

http.createServer(provider.callback()).listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
