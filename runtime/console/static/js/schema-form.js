// A form for a tool's arguments, built from its JSON schema's top-level properties.
// Strings, numbers, booleans and enums get their own inputs; anything nested is typed as JSON.

import { FieldError, h } from "./core.js";

function typeOf(schema) {
  const type = Array.isArray(schema.type) ? schema.type.find((one) => one !== "null") : schema.type;
  if (type) return type;
  const variant = (schema.anyOf || schema.oneOf || []).find((one) => one.type && one.type !== "null");
  return variant?.type ?? "json";
}

function input(name, schema, required, id) {
  const type = typeOf(schema);
  const common = { id, name, "aria-describedby": schema.description ? `${id}-hint` : null };
  if (Array.isArray(schema.enum)) {
    const options = schema.enum.map((value) => h("option", { value: JSON.stringify(value) }, String(value)));
    if (!required) options.unshift(h("option", { value: "" }, "(not given)"));
    return { element: h("select", common, options), kind: "enum" };
  }
  if (type === "boolean") {
    if (required) return { element: h("input", { ...common, type: "checkbox", checked: schema.default === true }), kind: "checkbox" };
    return {
      element: h("select", common, h("option", { value: "" }, "(not given)"), h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false")),
      kind: "boolean",
    };
  }
  if (type === "integer" || type === "number") {
    return { element: h("input", { ...common, type: "number", step: type === "integer" ? "1" : "any", placeholder: schema.default ?? "" }), kind: type };
  }
  if (type === "string") {
    // An input, not a textarea, so that Enter runs the tool.
    return { element: h("input", { ...common, placeholder: schema.default ?? "", spellcheck: "false", autocomplete: "off" }), kind: "string" };
  }
  return { element: h("textarea", { ...common, rows: 3, class: "mono", spellcheck: "false", placeholder: type === "array" ? "[ ]" : "{ }" }), kind: "json" };
}

export function schemaForm(container, schema) {
  const properties = Object.entries(schema?.properties ?? {});
  const required = new Set(schema?.required ?? []);
  const fields = properties.map(([name, property], index) => {
    const id = `argument-${index}`;
    const { element, kind } = input(name, property, required.has(name), id);
    const label = h("label", { for: id }, h("code", {}, name), required.has(name) ? null : h("span", { class: "muted" }, " (optional)"));
    const wrapper =
      kind === "checkbox"
        ? h("div", { class: "field" }, h("label", { class: "check" }, element, h("code", {}, name)))
        : h("div", { class: "field" }, label, element);
    if (property.description) wrapper.append(h("span", { class: "hint", id: `${id}-hint` }, property.description));
    return { name, kind, element, wrapper, required: required.has(name) };
  });
  container.replaceChildren(...(fields.length ? fields.map((field) => field.wrapper) : [h("p", { class: "muted" }, "This tool takes no arguments.")]));

  return {
    read() {
      const values = {};
      for (const field of fields) {
        const { name, kind, element } = field;
        const text = kind === "checkbox" ? null : element.value.trim();
        if (kind === "checkbox") {
          values[name] = element.checked;
          continue;
        }
        if (text === "") {
          if (field.required) throw new FieldError(name, `“${name}” is required.`);
          continue;
        }
        if (kind === "enum") values[name] = JSON.parse(text);
        else if (kind === "boolean") values[name] = text === "true";
        else if (kind === "integer" || kind === "number") {
          const number = Number(text);
          if (!Number.isFinite(number) || (kind === "integer" && !Number.isInteger(number))) {
            throw new FieldError(name, `“${name}” must be ${kind === "integer" ? "a whole number" : "a number"}.`);
          }
          values[name] = number;
        } else if (kind === "json") {
          try {
            values[name] = JSON.parse(text);
          } catch (error) {
            throw new FieldError(name, `“${name}” is not valid JSON: ${error.message}`);
          }
        } else values[name] = element.value;
      }
      return values;
    },
    write(values) {
      for (const { name, kind, element } of fields) {
        const value = values?.[name];
        if (kind === "checkbox") element.checked = value === true;
        else if (value === undefined) element.value = "";
        else if (kind === "enum" || kind === "json") element.value = kind === "enum" ? JSON.stringify(value) : JSON.stringify(value, null, 2);
        else element.value = String(value);
      }
    },
  };
}
