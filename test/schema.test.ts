/** firstSchemaError: the compiled check for valid values, TypeBox's own first error otherwise. */
import { Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { firstSchemaError } from "../src/schema.js";

const Schema = Type.Object(
  {
    id: Type.String({ pattern: "^[a-z]{1,8}$" }),
    n: Type.Integer({ minimum: 0, maximum: 100 }),
    tags: Type.Array(Type.Union([Type.Literal("a"), Type.Literal("b")]), { maxItems: 3 }),
  },
  { additionalProperties: false },
);

describe("firstSchemaError", () => {
  it("undefined for a valid value; TypeBox's first error (path and message) for an invalid one", () => {
    expect(firstSchemaError(Schema, { id: "abc", n: 3, tags: ["a"] })).toBeUndefined();
    expect(firstSchemaError(Schema, { id: "abc", n: 101, tags: [] })).toEqual({
      path: "/n",
      message: Value.Errors(Schema, { id: "abc", n: 101, tags: [] }).First()!.message,
    });
    expect(firstSchemaError(Schema, { id: "abc", n: 1, tags: [], extra: 1 })?.path).toBe("/extra");
  });

  it("agrees with Value.Check and Value.Errors on arbitrary values", () => {
    const arb = fc.record(
      {
        id: fc.oneof(fc.stringMatching(/^[a-z]{1,8}$/), fc.string(), fc.integer()),
        n: fc.oneof(fc.integer({ min: -5, max: 105 }), fc.double(), fc.string()),
        tags: fc.oneof(
          fc.array(fc.constantFrom("a", "b", "c"), { maxLength: 4 }),
          fc.constant(null),
        ),
        extra: fc.anything(),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(arb, (v) => {
        const got = firstSchemaError(Schema, v);
        const first = Value.Errors(Schema, v).First();
        expect(got === undefined).toBe(Value.Check(Schema, v));
        if (got) expect(got).toEqual({ path: first!.path, message: first!.message });
      }),
    );
  });
});
