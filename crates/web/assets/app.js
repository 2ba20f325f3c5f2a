// SmolLM3 chat: small enhancements on top of the server-rendered page and htmx.
// The server owns all state: an answer being written carries the class `streaming`, and
// body.generating mirrors it (for the Stop button and Esc). This file only adds keyboard
// shortcuts, copy buttons, the theme toggle, scrolling and the drawer.
// Every element may be missing, so every lookup is checked.
(() => {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);
  const byId = (id) => document.getElementById(id);
  const generating = () => document.body?.classList.contains('generating');
  const syncGenerating = () =>
    document.body?.classList.toggle('generating', !!document.querySelector('.streaming'));
  const narrow = () => window.matchMedia?.('(max-width: 700px)').matches;

  // True when the template already wired the control itself (htmx or inline
  // handler), so the fallbacks below do not act twice.
  const wired = (el) =>
    el.hasAttribute('onclick') ||
    Array.from(el.attributes).some((a) => a.name.startsWith('hx-') || a.name.startsWith('data-hx-'));

  // ---------- Theme: system -> dark -> light ----------
  // Runs as soon as this (deferred) script runs, before first paint of most content.
  const THEME_KEY = 'smollm3-theme';
  const THEMES = ['system', 'dark', 'light'];

  function storedTheme() {
    try {
      const t = localStorage.getItem(THEME_KEY);
      return THEMES.includes(t) ? t : 'system';
    } catch {
      return 'system'; // storage blocked (privacy mode): just follow the OS
    }
  }

  function labelThemeButton(mode) {
    const btn = byId('theme-toggle');
    if (!btn) return;
    btn.dataset.mode = mode;
    btn.title = `Theme: ${mode}`;
    btn.setAttribute('aria-label', `Theme: ${mode} (change)`);
  }

  function applyTheme(mode) {
    const root = document.documentElement;
    if (mode === 'system') root.removeAttribute('data-theme');
    else root.dataset.theme = mode;
    labelThemeButton(mode);
  }

  function cycleTheme() {
    const next = THEMES[(THEMES.indexOf(storedTheme()) + 1) % THEMES.length];
    try {
      if (next === 'system') localStorage.removeItem(THEME_KEY);
      else localStorage.setItem(THEME_KEY, next);
    } catch { /* not persisted; still applied below */ }
    applyTheme(next);
  }

  applyTheme(storedTheme());

  // ---------- Clipboard ----------
  async function copyText(text) {
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        return true;
      }
    } catch { /* permission denied or not focused: try the old way */ }
    const focused = document.activeElement;
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.style.cssText = 'position:fixed;top:0;left:0;opacity:0;pointer-events:none';
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    ta.remove();
    focused?.focus?.({ preventScroll: true });
    return ok;
  }

  // Show "Copied" on the button for 1.5 s. Code buttons draw their label from
  // data-label (see app.css); others get their content swapped and restored.
  const flashState = new WeakMap();
  function flash(btn, ok) {
    const text = ok ? 'Copied' : 'Copy failed';
    const usesLabel = btn.hasAttribute('data-label');
    let st = flashState.get(btn);
    if (!st) {
      st = { orig: usesLabel ? btn.dataset.label : btn.innerHTML, timer: 0 };
      flashState.set(btn, st);
    }
    clearTimeout(st.timer);
    if (usesLabel) btn.dataset.label = text;
    else btn.textContent = text;
    btn.classList.add('copied');
    st.timer = setTimeout(() => {
      if (usesLabel) btn.dataset.label = st.orig;
      else btn.innerHTML = st.orig;
      btn.classList.remove('copied');
      flashState.delete(btn);
    }, 1500);
  }

  function messageText(btn) {
    const article = btn.closest('article');
    const content = article && (article.querySelector(':scope > .content') || article.querySelector('.content'));
    return content ? (content.innerText ?? content.textContent) : '';
  }

  function codeText(btn) {
    const pre = btn.closest('pre');
    if (!pre) return '';
    const code = pre.querySelector('code');
    return (code || pre).textContent;
  }

  // Idempotent: the server re-renders message HTML while streaming, so this runs
  // after every swap and only fills in what is missing.
  function addCopyButtons() {
    for (const pre of document.querySelectorAll('.md pre')) {
      if (pre.querySelector(':scope > button.copy-code')) continue;
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'copy-code';
      b.dataset.label = 'Copy';
      b.setAttribute('aria-label', 'Copy code');
      pre.appendChild(b);
    }
  }

  // ---------- Composer ----------
  function autosize() {
    const ta = byId('input');
    if (!ta) return;
    ta.style.height = 'auto';
    ta.style.height = `${ta.scrollHeight}px`; // CSS max-height caps it, then it scrolls
  }

  function submit(form) {
    if (!form) return;
    if (typeof form.requestSubmit === 'function') form.requestSubmit();
    else form.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
  }

  // ---------- Auto-scroll ----------
  // Follow the bottom of #messages while it grows, unless the user moved away.
  // Wheel/touch are watched because slow drags would otherwise be pulled back
  // down by the next token before a scroll event could register the intent.
  let stick = true;
  let touching = false;
  let lastMessages = null;
  const nearBottom = (el) => el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  const inMessages = (t) => t instanceof Element && t.closest('#messages');

  function follow() {
    const el = byId('messages');
    if (!el) return;
    if (el !== lastMessages) {
      // A freshly rendered conversation opens at its latest message.
      lastMessages = el;
      stick = true;
    }
    if (stick && !touching) el.scrollTop = el.scrollHeight;
  }

  document.addEventListener('scroll', (e) => {
    if (e.target instanceof Element && e.target.id === 'messages' && !touching) stick = nearBottom(e.target);
  }, true);
  document.addEventListener('wheel', (e) => {
    if (e.deltaY < 0 && inMessages(e.target)) stick = false;
  }, { capture: true, passive: true });
  document.addEventListener('touchstart', (e) => {
    if (inMessages(e.target)) touching = true;
  }, { capture: true, passive: true });
  const touchEnd = () => {
    if (!touching) return;
    touching = false;
    const el = byId('messages');
    if (el) stick = nearBottom(el);
  };
  document.addEventListener('touchend', touchEnd, { capture: true, passive: true });
  document.addEventListener('touchcancel', touchEnd, { capture: true, passive: true });

  // ---------- Banner ----------
  // CSS hides a truly empty banner; this also hides one holding only whitespace.
  // It only undoes a `hidden` it set itself.
  function syncBanner() {
    const b = byId('banner');
    if (!b) return;
    const empty = b.textContent.trim() === '';
    if (empty && !b.hidden) {
      b.hidden = true;
      b.dataset.autoHidden = '';
    } else if (!empty && 'autoHidden' in b.dataset) {
      b.hidden = false;
      delete b.dataset.autoHidden;
    }
  }

  // ---------- Sidebar drawer ----------
  function setSidebar(open) {
    document.body?.classList.toggle('sidebar-open', open);
    byId('sidebar-toggle')?.setAttribute('aria-expanded', String(open));
  }

  // ---------- Clicks (delegated, so swapped-in elements work too) ----------
  document.addEventListener('click', (e) => {
    const t = e.target instanceof Element ? e.target : null;
    if (!t) return;

    // Backdrop of the open drawer (pseudo-element on <body>).
    if (t === document.body && document.body.classList.contains('sidebar-open')) {
      setSidebar(false);
      return;
    }

    const btn = t.closest('button');
    if (btn?.classList.contains('copy-msg')) {
      copyText(messageText(btn)).then((ok) => flash(btn, ok));
      return;
    }
    if (btn?.classList.contains('copy-code')) {
      copyText(codeText(btn)).then((ok) => flash(btn, ok));
      return;
    }
    if (btn?.id === 'theme-toggle') {
      cycleTheme();
      return;
    }
    if (btn?.id === 'sidebar-toggle') {
      setSidebar(!document.body.classList.contains('sidebar-open'));
      return;
    }
    // Fallback toggles, only when the template did not wire these itself.
    if (btn?.id === 'settings-toggle' && !wired(btn) && !btn.closest('summary')) {
      const d = byId('settings');
      if (d && 'open' in d) {
        d.open = !d.open;
        btn.setAttribute('aria-expanded', String(d.open));
      }
      return;
    }
    if (btn?.classList.contains('conv-rename-btn') && !wired(btn)) {
      const conv = btn.closest('.conv');
      if (conv) {
        const on = conv.classList.toggle('renaming');
        const input = on && conv.querySelector('.conv-rename input:not([type=hidden])');
        if (input) {
          input.focus();
          input.select?.();
        }
      }
      return;
    }
    // Picking a conversation or starting one closes the drawer on phones.
    if (t.closest('a.conv-link, #new-chat')) setSidebar(false);
  });

  // ---------- Keyboard ----------
  function isTyping(el) {
    if (!(el instanceof Element)) return false;
    if (el.isContentEditable) return true;
    if (el.tagName === 'TEXTAREA' || el.tagName === 'SELECT') return true;
    if (el.tagName !== 'INPUT') return false;
    return !['checkbox', 'radio', 'button', 'submit', 'reset', 'range', 'color', 'file'].includes(el.type);
  }

  document.addEventListener('keydown', (e) => {
    if (e.isComposing || e.keyCode === 229) return; // IME is composing: its Enter/Esc are not ours
    const t = e.target;
    const mod = e.ctrlKey || e.metaKey;
    const key = (e.key || '').toLowerCase();

    // Enter sends, Shift+Enter is a newline (default behaviour).
    if (t instanceof Element && t.id === 'input' && e.key === 'Enter' && !e.shiftKey && !mod && !e.altKey) {
      e.preventDefault();
      if (t.value.trim() === '') return; // nothing to send
      stick = true;
      submit(t.form || byId('composer'));
      return;
    }

    if (e.key === 'Escape') {
      if (generating()) {
        const stop = byId('stop');
        if (stop) {
          e.preventDefault();
          stop.click();
        }
        return;
      }
      const renaming = t instanceof Element && t.closest('.conv.renaming');
      if (renaming) {
        const rb = renaming.querySelector('.conv-rename-btn');
        if (!rb || !wired(rb)) renaming.classList.remove('renaming');
        return;
      }
      if (document.body?.classList.contains('sidebar-open')) setSidebar(false);
      return;
    }

    // Ctrl/Cmd+Shift+O: new chat.
    if (mod && e.shiftKey && !e.altKey && (e.code === 'KeyO' || key === 'o')) {
      const nc = byId('new-chat');
      if (nc) {
        e.preventDefault();
        nc.click();
      }
      return;
    }

    // Ctrl/Cmd+K: search conversations.
    if (mod && !e.shiftKey && !e.altKey && key === 'k') {
      const s = byId('search');
      if (s) {
        e.preventDefault();
        if (narrow()) setSidebar(true);
        s.focus();
        s.select?.();
      }
      return;
    }

    // "/" outside a text field: jump to the message box.
    if (e.key === '/' && !mod && !e.altKey && !isTyping(t)) {
      const input = byId('input');
      if (input) {
        e.preventDefault();
        input.focus();
      }
    }
  });

  document.addEventListener('input', (e) => {
    if (e.target instanceof Element && e.target.id === 'input') autosize();
  });

  // Sending a message means the user wants to see the reply.
  document.addEventListener('submit', (e) => {
    if (e.target instanceof Element && e.target.id === 'composer') stick = true;
  }, true);

  // ---------- After the server changes the page ----------
  function enhance() {
    syncGenerating();
    addCopyButtons();
    labelThemeButton(storedTheme());
    syncBanner();
    autosize(); // the composer may have been reset or replaced
    follow();
  }

  // The server answers a refused action (busy, not found, a bad setting) with an error
  // status and a banner it retargets; htmx does not swap error answers unless told to.
  document.addEventListener('htmx:beforeSwap', (e) => {
    const xhr = e.detail?.xhr;
    if (xhr && xhr.status >= 400 && xhr.getResponseHeader('HX-Retarget') === '#banner') {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  for (const ev of ['htmx:afterSwap', 'htmx:afterSettle', 'htmx:sseMessage', 'htmx:oobAfterSwap']) {
    document.addEventListener(ev, enhance);
  }
  document.addEventListener('htmx:afterRequest', autosize);

  // Streamed tokens change the DOM many times a second; following them here
  // covers every swap style (SSE, OOB, plain) without knowing which one is used.
  function observe() {
    if (!document.body || typeof MutationObserver === 'undefined') return;
    new MutationObserver(() => {
      syncGenerating();
      follow();
      syncBanner();
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  }

  function start() {
    enhance();
    observe();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start, { once: true });
  else start();

  // ---------- Service worker (installable app, cached static files) ----------
  if ('serviceWorker' in navigator) {
    window.addEventListener('load', () => {
      navigator.serviceWorker.register('/sw.js').catch(() => { /* optional */ });
    }, { once: true });
  }
})();
