"""Single sign-on through an org's identity provider (OIDC or SAML), and when its MFA counts."""
