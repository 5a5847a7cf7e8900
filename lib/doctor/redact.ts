/** What replaces a secret in anything the doctor prints. */
export const redacted = '<redacted>'

// Query parameters that carry credentials by convention, whatever token was given. A colon
// ends the value only where it punctuates the text around the URL (before a space or the end).
const secretParams = /([?&](?:access_token|token|jwt|auth)=)(?:[^&#\s":]|:(?!\s|$))*/gi
// The password of a URL's userinfo: ws://user:password@host.
const userinfoPassword = /(\/\/[^/\s:@]*:)[^/\s@]*@/g

/**
 * Removes the token, the values of credential-like query parameters and URL passwords from
 * `text`. Every line the doctor writes goes through here last, so a server that echoes the
 * token cannot make the doctor print it either.
 */
export function redact (text: string, token: string | undefined): string {
  const stripped = text.replace(secretParams, `$1${redacted}`).replace(userinfoPassword, `$1${redacted}@`)
  return token === undefined ? stripped : stripped.replaceAll(token, redacted)
}
