import { CORE_CASES } from "./core_cases.ts";
import { fakeCorePair } from "./fake_core_pair.ts";

for (const testCase of CORE_CASES) {
  Deno.test(`${testCase.name} (fakes)`, () => testCase.run(fakeCorePair));
}
