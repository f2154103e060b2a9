// Uploads a file to vidpipe from a page of another origin, in a real browser
// (Debian's Chromium, driven by playwright-core): serves a small page on its
// own loopback HTTP server (on PAGE_PORT, so its origin is not vidpipe's),
// which loads tus-js-client's browser build (tus.min.js) and Uppy's bundle
// (uppy.min.js, uppy.min.css) from node_modules, as published, through that
// same server. In the page, the file (fetched from the page's server) is
// made a File and uploaded twice to ENDPOINT = VIDPIPE/api/client/v1/tus:
// once with `new tus.Upload(...)`, once with Uppy's Tus plugin.
//
// Prints one JSON line:
//   {"page_origin": "http://127.0.0.1:PAGE_PORT", "endpoint": "...",
//    "tus": {"url": "..." | null, "error": null | "..."},
//    "uppy": {"url": "..." | null, "error": null | "..."},
//    "console_errors": ["..."], "failed_requests": ["..."]}
// and exits 0 only if both uploads succeeded and the page logged no error
// (console.error, a failed load, a CORS refusal, an uncaught exception);
// otherwise 1, after the same line. Exits 2 on a bad argument or when the
// browser cannot be started.
//
// Usage: node browser_upload.mjs VIDPIPE API_KEY FILE FOLDER PAGE_PORT [OPTIONS]
//
//   VIDPIPE    vidpipe's base URL, e.g. http://127.0.0.1:8080
//   API_KEY    sent as `Authorization: Bearer API_KEY` on every request
//   FILE       the file to upload; its base name is the `filename` metadata
//   FOLDER     the `folder` metadata
//   PAGE_PORT  the loopback port of the page's server (its origin is
//              http://127.0.0.1:PAGE_PORT)
//
//   --chunk-size N   PATCH bodies of at most N bytes (default 262144)
//   --chromium PATH  the browser (default /usr/bin/chromium)
//
// Retries are quick (0, 200, 500 ms), for tests; the whole run gives up
// after 45 s.

import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
const modules = join(here, 'node_modules')

function usage(message) {
  process.stderr.write(`browser_upload: ${message}\n`)
  process.exit(2)
}

let parsed
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      'chunk-size': { type: 'string' },
      chromium: { type: 'string' },
    },
  })
} catch (error) {
  usage(error.message)
}
const { values, positionals } = parsed
if (positionals.length !== 5) {
  usage('usage: browser_upload.mjs VIDPIPE API_KEY FILE FOLDER PAGE_PORT [OPTIONS]')
}
const [vidpipe, apiKey, file, folder, pagePortArg] = positionals
const pagePort = Number(pagePortArg)
if (!Number.isInteger(pagePort) || pagePort < 1 || pagePort > 65535) {
  usage(`PAGE_PORT wants a port, not ${pagePortArg}`)
}
const chunkSize = Number(values['chunk-size'] ?? 256 * 1024)
if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) {
  usage(`--chunk-size wants a whole number, not ${values['chunk-size']}`)
}
const executablePath = values.chromium ?? '/usr/bin/chromium'
const endpoint = `${vidpipe.replace(/\/+$/, '')}/api/client/v1/tus`
const pageOrigin = `http://127.0.0.1:${pagePort}`
const filename = basename(file)

// What the page's server serves: the page, the clients' published builds,
// and the file's bytes.
const page = `<!doctype html>
<html>
  <head>
    <meta charset="utf-8">
    <title>vidpipe browser upload</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="/uppy.min.css">
    <script src="/tus.min.js"></script>
    <script src="/uppy.min.js"></script>
  </head>
  <body><p>vidpipe browser upload test page</p></body>
</html>
`
const assets = {
  '/tus.min.js': [join(modules, 'tus-js-client/dist/tus.min.js'), 'text/javascript'],
  '/uppy.min.js': [join(modules, 'uppy/dist/uppy.min.js'), 'text/javascript'],
  '/uppy.min.css': [join(modules, 'uppy/dist/uppy.min.css'), 'text/css'],
  '/file': [file, 'application/octet-stream'],
}

const server = createServer(async (request, response) => {
  const path = new URL(request.url, pageOrigin).pathname
  try {
    if (path === '/') {
      response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' })
      response.end(page)
    } else if (assets[path]) {
      const [source, type] = assets[path]
      const body = await readFile(source)
      response.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' })
      response.end(body)
    } else {
      response.writeHead(404, { 'Content-Type': 'text/plain' })
      response.end('not found\n')
    }
  } catch (error) {
    response.writeHead(500, { 'Content-Type': 'text/plain' })
    response.end(`${error}\n`)
  }
})

const result = {
  page_origin: pageOrigin,
  endpoint,
  tus: { url: null, error: null },
  uppy: { url: null, error: null },
  console_errors: [],
  failed_requests: [],
}

let browser
function finish(code) {
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code))
}

const watchdog = setTimeout(() => {
  result.console_errors.push('browser_upload: gave up after 45 s')
  finish(1)
}, 45_000)
watchdog.unref()

// The two uploads, run inside the page. Each resolves with the upload's URL
// or an error message; neither throws.
async function uploadInPage({ endpoint, apiKey, filename, folder, chunkSize }) {
  const bytes = await (await fetch('/file')).arrayBuffer()
  const file = new File([bytes], filename, { type: 'video/mp4', lastModified: Date.now() })
  const headers = { Authorization: `Bearer ${apiKey}` }
  const retryDelays = [0, 200, 500]

  const viaTus = await new Promise((resolve) => {
    const upload = new tus.Upload(file, {
      endpoint,
      headers,
      metadata: { filename, folder },
      chunkSize,
      retryDelays,
      onError: (error) => resolve({ url: null, error: String(error) }),
      onSuccess: () => resolve({ url: upload.url, error: null }),
    })
    upload.start()
  })

  let viaUppy
  try {
    const uppy = new Uppy.Uppy({ autoProceed: false })
    uppy.use(Uppy.Tus, { endpoint, headers, chunkSize, retryDelays })
    uppy.addFile({ name: filename, type: file.type, data: file, meta: { folder } })
    const outcome = await uppy.upload()
    if (outcome.successful?.length === 1 && outcome.failed?.length === 0) {
      const uploaded = outcome.successful[0]
      viaUppy = { url: uploaded.uploadURL ?? uploaded.tus?.uploadUrl ?? null, error: null }
      if (!viaUppy.url) viaUppy.error = 'Uppy reported success without an upload URL'
    } else {
      const failed = outcome.failed?.[0]
      viaUppy = { url: null, error: String(failed?.error ?? JSON.stringify(outcome)) }
    }
    uppy.destroy()
  } catch (error) {
    viaUppy = { url: null, error: String(error) }
  }
  return { tus: viaTus, uppy: viaUppy }
}

try {
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(pagePort, '127.0.0.1', resolve)
  })
  try {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    })
  } catch (error) {
    process.stderr.write(`browser_upload: cannot start ${executablePath}: ${error}\n`)
    process.exit(2)
  }
  const context = await browser.newContext()
  const tab = await context.newPage()
  tab.on('console', (message) => {
    if (message.type() === 'error') result.console_errors.push(message.text())
  })
  tab.on('pageerror', (error) => result.console_errors.push(`uncaught: ${error}`))
  tab.on('requestfailed', (request) => {
    result.failed_requests.push(
      `${request.method()} ${request.url()}: ${request.failure()?.errorText ?? 'failed'}`,
    )
  })
  await tab.goto(`${pageOrigin}/`, { waitUntil: 'load' })
  const loaded = await tab.evaluate(() => ({
    tus: typeof tus?.Upload === 'function' && tus.isSupported,
    uppy: typeof Uppy?.Uppy === 'function' && typeof Uppy?.Tus === 'function',
  }))
  if (!loaded.tus || !loaded.uppy) {
    result.console_errors.push(`the page did not load the clients: ${JSON.stringify(loaded)}`)
    finish(1)
  } else {
    const outcome = await tab.evaluate(uploadInPage, {
      endpoint,
      apiKey,
      filename,
      folder,
      chunkSize,
    })
    result.tus = outcome.tus
    result.uppy = outcome.uppy
    // Console messages arrive asynchronously: let the last ones in.
    await tab.waitForTimeout(200)
    await browser.close()
    server.close()
    const ok = result.tus.url && result.uppy.url && result.console_errors.length === 0
    finish(ok ? 0 : 1)
  }
} catch (error) {
  result.console_errors.push(`browser_upload: ${error?.stack ?? error}`)
  finish(1)
}
