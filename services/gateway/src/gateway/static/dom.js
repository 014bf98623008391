// The page's one DOM helper, shared by its modules.

/** A new element: its tag, class (optional) and text (optional). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
