// Service worker for the SmolLM3 chat: makes the app installable and its static
// files load instantly. Only the fixed list below is ever cached; pages, /c/...,
// /v1/... and everything else go straight to the network, so conversation data
// never lands in a cache.
//
// Served at /sw.js (not /assets/sw.js) so that its scope is the whole site.
// The server writes its asset version here when it serves this file, so a new build
// drops the old copies at once.
const VERSION = '__ASSET_VERSION__';
const CACHE = `smollm3-static-${VERSION}`;
const ASSETS = [
  `/assets/${VERSION}/app.css`,
  `/assets/${VERSION}/app.js`,
  `/assets/${VERSION}/htmx.min.js`,
  `/assets/${VERSION}/htmx-ext-sse.js`,
  `/assets/${VERSION}/icon.svg`,
  `/assets/${VERSION}/icon-192.png`,
  `/assets/${VERSION}/icon-512.png`,
  '/manifest.webmanifest',
];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // One by one: a missing file must not stop the others from being cached.
    await Promise.all(ASSETS.map((url) =>
      cache.add(new Request(url, { cache: 'reload' })).catch(() => {})));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    const keys = await caches.keys();
    await Promise.all(keys
      .filter((k) => k.startsWith('smollm3-') && k !== CACHE)
      .map((k) => caches.delete(k)));
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  // Not ours to cache (also leaves "?v=..." cache-busted URLs to the network).
  if (url.origin !== self.location.origin || url.search || !ASSETS.includes(url.pathname)) return;

  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const hit = await cache.match(url.pathname);
    const fresh = fetch(req).then((res) => {
      if (res.ok) cache.put(url.pathname, res.clone()).catch(() => {});
      return res;
    });
    if (hit) {
      event.waitUntil(fresh.catch(() => {})); // refresh for next time
      return hit;
    }
    return fresh;
  })());
});
