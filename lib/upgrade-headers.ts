/*
 * The hop-by-hop headers of an upgrade, as the guard and the doctor read them, and the proxy
 * setting that most often loses them.
 */

const connectionUpgrade = /(?:^|,)\s*upgrade\s*(?:,|$)/i

/** Whether a `Connection` header value lists `upgrade` (RFC 9110 §7.6.1: a comma-separated list). */
export function listsUpgrade (connection: string | undefined): boolean {
  return connection !== undefined && connectionUpgrade.test(connection)
}

/** What nginx needs in the location to pass an upgrade on: it drops hop-by-hop headers otherwise. */
export const nginxUpgradeFix = 'for nginx, in the location: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";'
