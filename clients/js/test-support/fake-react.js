// test-support/fake-react.js: just enough of React's hooks (useState,
// useEffect, useRef) to run useRtEvents without React or a DOM. State updates
// mark the component dirty; flush() renders again and runs the effects whose
// dependencies changed, as React does after a commit.

let current = null;

function depsChanged(a, b) {
  return !a || !b || a.length !== b.length || a.some((x, i) => !Object.is(x, b[i]));
}

export function useState(init) {
  const c = current, i = c.i++;
  if (!(i in c.hooks)) {
    const h = { value: typeof init === 'function' ? init() : init };
    h.set = (u) => {
      const v = typeof u === 'function' ? u(h.value) : u;
      if (!Object.is(v, h.value)) { h.value = v; c.dirty = true; }
    };
    c.hooks[i] = h;
  }
  return [c.hooks[i].value, c.hooks[i].set];
}

export function useRef(init) {
  const c = current, i = c.i++;
  if (!(i in c.hooks)) c.hooks[i] = { current: init };
  return c.hooks[i];
}

export function useEffect(fn, deps) {
  const c = current, i = c.i++;
  const h = c.hooks[i] || (c.hooks[i] = { deps: undefined, cleanup: undefined });
  if (depsChanged(h.deps, deps)) c.pending.push([h, fn, deps]);
}

/** Mounts a component: render(() => useRtEvents(...)). */
export function render(component) {
  const c = { component, hooks: [], pending: [], result: undefined, dirty: true, renders: 0 };
  flush(c);
  return c;
}

/** Renders again (with a new component function if given) until stable. */
export function flush(c, component) {
  if (component) { c.component = component; c.dirty = true; }
  for (let n = 0; c.dirty; n++) {
    if (n > 50) throw new Error('render loop');
    c.dirty = false;
    c.i = 0;
    current = c;
    c.result = c.component();
    c.renders++;
    current = null;
    for (const [h, fn, deps] of c.pending.splice(0)) {
      h.cleanup?.();
      h.deps = deps;
      h.cleanup = fn();
    }
  }
  return c.result;
}

export function unmount(c) {
  for (const h of c.hooks) if (h && 'cleanup' in h) h.cleanup?.();
}

export default { useState, useRef, useEffect };
