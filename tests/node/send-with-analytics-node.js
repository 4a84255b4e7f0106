#!/usr/bin/env node
// Drives the official Segment Node SDK (@segment/analytics-node) against a
// Tessera server. Used by tests/e2e/test_sdks.py.
//
//   node send-with-analytics-node.js PLAN.json
//
// PLAN.json: {
//   "host": "http://127.0.0.1:PORT", "writeKey": "...",
//   "settings": { ...extra AnalyticsSettings, e.g. flushAt, maxRetries },
//   "calls": [ { "method": "track", "params": { "userId": "u", "event": "E", ... } }, ... ]
// }
// Prints one JSON object on stdout:
//   { "sent": [every message the SDK put on the wire, in order],
//     "responses": [{ "status", "url" }], "callbacks": [{ "index", "error" }],
//     "errors": [...], "requestHeaders": [...] }
// Exit code 0 when the SDK finished (closeAndFlush resolved), 1 otherwise.
'use strict'

const fs = require('fs')
const { Analytics } = require('@segment/analytics-node')

async function main() {
  const planPath = process.argv[2]
  if (!planPath) throw new Error('usage: send-with-analytics-node.js PLAN.json')
  const plan = JSON.parse(fs.readFileSync(planPath, 'utf8'))

  const analytics = new Analytics({
    writeKey: plan.writeKey,
    host: plan.host,
    maxRetries: 2,
    httpRequestTimeout: 15000,
    ...(plan.settings || {}),
  })

  const out = { sent: [], responses: [], callbacks: [], errors: [], requestHeaders: [] }

  analytics.on('http_request', (req) => {
    const headers = { ...req.headers }
    out.requestHeaders.push(headers)
    try {
      const body = JSON.parse(req.body)
      for (const msg of body.batch || []) out.sent.push(msg)
    } catch (e) {
      out.errors.push({ where: 'http_request', error: String(e) })
    }
  })
  analytics.on('http_response', (res) => {
    out.responses.push({ status: res.status, url: res.url })
  })
  analytics.on('error', (err) => {
    out.errors.push({ where: 'emitter', code: err && err.code, reason: String(err && err.reason) })
  })

  const allowed = new Set(['identify', 'track', 'page', 'screen', 'group', 'alias'])
  plan.calls.forEach((call, index) => {
    if (!allowed.has(call.method)) throw new Error(`unknown method ${call.method}`)
    analytics[call.method](call.params, (err) => {
      out.callbacks.push({ index, error: err ? String(err && (err.message || err)) : null })
    })
  })

  await analytics.closeAndFlush({ timeout: 30000 })
  process.stdout.write(JSON.stringify(out) + '\n')
}

main().catch((e) => {
  process.stderr.write(`send-with-analytics-node failed: ${e && e.stack ? e.stack : e}\n`)
  process.exit(1)
})
