// test-support/react-loader.js: a module resolve hook that makes
// `import ... from 'react'` load test-support/fake-react.js (registered by
// test/react.test.js through node:module's register()).

const fake = new URL('./fake-react.js', import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (specifier === 'react') return { url: fake, shortCircuit: true };
  return next(specifier, context);
}
