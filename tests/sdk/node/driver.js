// Drives @segment/analytics-node (pinned in package.json) against a trackd server and prints,
// as one JSON line, every request it made (body as sent) and every answer it got.
// usage: node driver.js HOST WRITE_KEY TAG
const { Analytics } = require('@segment/analytics-node')

const [host, writeKey, tag] = process.argv.slice(2)
const out = { requests: [], responses: [], errors: [], callbacks: [] }
const analytics = new Analytics({ writeKey, host, flushAt: 50, flushInterval: 200, maxRetries: 1 })
analytics.on('http_request', (r) => out.requests.push({ url: r.url, headers: r.headers, body: JSON.parse(r.body) }))
analytics.on('http_response', (r) => out.responses.push({ status: r.status, url: r.url }))
analytics.on('error', (e) => out.errors.push(String(e && (e.reason || e.code || e))))
const done = (err) => out.callbacks.push(err ? String(err.reason || err) : null)

const user = `node-${tag}`
analytics.identify({ userId: user, traits: { email: 'a@example.com', plan: 'pro' }, context: { locale: 'en-US' } }, done)
analytics.track({ userId: user, event: 'Item Purchased', properties: { revenue: 14.99, items: [{ sku: 'a', qty: 2 }] } }, done)
analytics.track({ anonymousId: `anon-${tag}`, event: 'Viewed', timestamp: new Date('2024-05-01T12:00:00.000Z'), integrations: { Mixpanel: false } }, done)
analytics.page({ userId: user, category: 'Docs', name: 'Home', properties: { url: 'http://example.com' } }, done)
analytics.screen({ userId: user, name: 'Settings', properties: { section: 'privacy' } }, done)
analytics.group({ userId: user, groupId: `g-${tag}`, traits: { name: 'Initech', employees: 100 } }, done)
analytics.alias({ userId: user, previousId: `anon-${tag}` }, done)
analytics.closeAndFlush({ timeout: 30000 }).then(() => {
  process.stdout.write(JSON.stringify(out) + '\n')
})
