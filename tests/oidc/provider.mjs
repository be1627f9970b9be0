// A real OpenID Connect provider for the tests, on loopback only.
// Configuration comes from the environment (set by tests/servers.py):
//   OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI,
//   OIDC_ACCOUNTS: JSON {"username": {"roles": [...], "groups": [...]}}
// Its development interactions show a login form that accepts any listed username.
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: [process.env.OIDC_REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'realm_access', 'groups'],
  },
  conformIdTokenClaims: false, // put the profile claims in the ID token, as Keycloak does
  pkce: { required: () => true },
  cookies: { keys: ['insitu-tests-only'] },
  async findAccount(ctx, id) {
    if (!(id in accounts)) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: `sub-${id}`,
          preferred_username: id,
          realm_access: { roles: accounts[id].roles || [] },
          groups: accounts[id].groups || [],
        };
      },
    };
  },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
