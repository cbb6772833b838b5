//! A small read-only tree of a parsed document, built by the hardened reader.
//!
//! It exists so that the signature code can find its elements and so that
//! callers read, after verification, exactly the tree that was hashed: the
//! canonicaliser is replayed from this tree, never from a second parse.
//! Nodes live in one arena in document order; ids are indexes.

use smallvec::SmallVec;

use super::reader::{parse, Attr, Element, Limits, NsDecl, Sink, XmlError};

/// Index of a node in its [`Document`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(usize);

#[derive(Debug, Clone)]
pub struct OwnedAttr {
    pub prefix: String,
    pub local: String,
    pub ns: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct ElementData {
    pub qname: String,
    pub prefix: String,
    pub local: String,
    pub ns: String,
    pub attrs: Vec<OwnedAttr>,
    pub ns_decls: Vec<(String, String)>,
    pub children: Vec<NodeId>,
    /// Byte span of the start tag, and of the end tag (equal for `<a/>`).
    pub start_span: (usize, usize),
    pub end_span: (usize, usize),
    pub empty: bool,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Boxed: an element's data is ~200 bytes, and every text, comment or
    /// processing instruction of the tree would otherwise be that size too
    /// (a quarter of a million nodes, the reader's budget, took 56 MB in
    /// one allocation; boxed, ~16 MB).
    Element(Box<ElementData>),
    Text(String),
    Comment(String),
    Pi {
        target: String,
        data: String,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    pub parent: Option<NodeId>,
}

/// A parsed document: the root element plus comments and PIs around it.
#[derive(Debug, Clone)]
pub struct Document {
    nodes: Vec<Node>,
    /// Top-level nodes in order (one of them is the root element).
    top: Vec<NodeId>,
    root: NodeId,
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    top: Vec<NodeId>,
    open: Vec<NodeId>,
    root: Option<NodeId>,
}

impl Builder {
    fn add(&mut self, kind: NodeKind) -> NodeId {
        let id = NodeId(self.nodes.len());
        let parent = self.open.last().copied();
        self.nodes.push(Node { kind, parent });
        match parent {
            Some(p) => {
                if let NodeKind::Element(e) = &mut self.nodes[p.0].kind {
                    e.children.push(id);
                }
            }
            None => self.top.push(id),
        }
        id
    }
}

impl Sink for Builder {
    fn start(&mut self, el: &Element<'_>) {
        let id = self.add(NodeKind::Element(Box::new(ElementData {
            qname: el.qname.to_owned(),
            prefix: el.prefix.to_owned(),
            local: el.local.to_owned(),
            ns: el.ns.to_owned(),
            attrs: el
                .attrs
                .iter()
                .map(|a| OwnedAttr {
                    prefix: a.prefix.to_owned(),
                    local: a.local.to_owned(),
                    ns: a.ns.to_owned(),
                    value: a.value.to_owned(),
                })
                .collect(),
            ns_decls: el
                .ns_decls
                .iter()
                .map(|d| (d.prefix.to_owned(), d.uri.to_owned()))
                .collect(),
            children: Vec::new(),
            start_span: el.span,
            end_span: el.span,
            empty: el.empty,
        })));
        if self.root.is_none() {
            self.root = Some(id);
        }
        self.open.push(id);
    }

    fn end(&mut self, span: (usize, usize)) {
        if let Some(id) = self.open.pop() {
            if let NodeKind::Element(e) = &mut self.nodes[id.0].kind {
                e.end_span = span;
            }
        }
    }

    fn text(&mut self, text: &str) {
        // The reader may split one text node around references; join them.
        if let Some(&parent) = self.open.last() {
            if let NodeKind::Element(e) = &self.nodes[parent.0].kind {
                if let Some(&last) = e.children.last() {
                    if let NodeKind::Text(t) = &mut self.nodes[last.0].kind {
                        t.push_str(text);
                        return;
                    }
                }
            }
        }
        self.add(NodeKind::Text(text.to_owned()));
    }

    fn comment(&mut self, text: &str) {
        self.add(NodeKind::Comment(text.to_owned()));
    }

    fn pi(&mut self, target: &str, data: &str) {
        self.add(NodeKind::Pi {
            target: target.to_owned(),
            data: data.to_owned(),
        });
    }
}

impl Document {
    pub fn parse(input: &[u8], limits: &Limits) -> Result<Document, XmlError> {
        let mut b = Builder::default();
        parse(input, limits, &mut b)?;
        let root = b
            .root
            .ok_or_else(|| XmlError::new(input, 0, super::reader::XmlErrorKind::NoRoot))?;
        Ok(Document {
            nodes: b.nodes,
            top: b.top,
            root,
        })
    }

    pub fn root(&self) -> NodeId {
        self.root
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub fn element(&self, id: NodeId) -> Option<&ElementData> {
        match &self.nodes[id.0].kind {
            NodeKind::Element(e) => Some(e),
            _ => None,
        }
    }

    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        self.nodes[id.0].parent
    }

    /// Child elements of `id`, in order.
    pub fn child_elements(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.element(id)
            .map(|e| e.children.as_slice())
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|&c| self.element(c).is_some())
    }

    /// First child element with this namespace and local name.
    pub fn child(&self, id: NodeId, ns: &str, local: &str) -> Option<NodeId> {
        self.child_elements(id).find(|&c| self.is(c, ns, local))
    }

    pub fn is(&self, id: NodeId, ns: &str, local: &str) -> bool {
        self.element(id)
            .is_some_and(|e| e.ns == ns && e.local == local)
    }

    /// Every element in the document with this expanded name, in order.
    pub fn find_all(&self, ns: &str, local: &str) -> Vec<NodeId> {
        (0..self.nodes.len())
            .map(NodeId)
            .filter(|&i| self.is(i, ns, local))
            .collect()
    }

    /// An unqualified attribute's value.
    pub fn attr(&self, id: NodeId, local: &str) -> Option<&str> {
        self.element(id)?
            .attrs
            .iter()
            .find(|a| a.ns.is_empty() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Concatenated text of all descendants.
    pub fn text(&self, id: NodeId) -> String {
        let mut s = String::new();
        self.collect_text(id, &mut s);
        s
    }

    fn collect_text(&self, id: NodeId, s: &mut String) {
        match &self.nodes[id.0].kind {
            NodeKind::Text(t) => s.push_str(t),
            NodeKind::Element(e) => {
                for &c in &e.children {
                    self.collect_text(c, s);
                }
            }
            _ => {}
        }
    }

    /// Does `id` have any non-whitespace text child directly?
    pub fn has_text_content(&self, id: NodeId) -> bool {
        self.element(id).is_some_and(|e| {
            e.children.iter().any(
                |&c| matches!(&self.nodes[c.0].kind, NodeKind::Text(t) if !t.trim().is_empty()),
            )
        })
    }

    fn as_element<'d>(e: &'d ElementData, attrs: SmallVec<[Attr<'d>; 4]>) -> Element<'d> {
        Element {
            qname: &e.qname,
            prefix: &e.prefix,
            local: &e.local,
            ns: &e.ns,
            attrs,
            ns_decls: e
                .ns_decls
                .iter()
                .map(|(p, u)| NsDecl { prefix: p, uri: u })
                .collect(),
            span: e.start_span,
            empty: e.empty,
        }
    }

    fn attrs_of(e: &ElementData) -> SmallVec<[Attr<'_>; 4]> {
        e.attrs
            .iter()
            .map(|a| Attr {
                prefix: &a.prefix,
                local: &a.local,
                ns: &a.ns,
                value: &a.value,
            })
            .collect()
    }

    /// Replays the subtree at `id` into `sink`, leaving out `skip` and its
    /// descendants.
    pub fn replay<S: Sink>(&self, id: NodeId, skip: Option<NodeId>, sink: &mut S) {
        if Some(id) == skip {
            return;
        }
        match &self.nodes[id.0].kind {
            NodeKind::Element(e) => {
                sink.start(&Self::as_element(e, Self::attrs_of(e)));
                for &c in &e.children {
                    self.replay(c, skip, sink);
                }
                sink.end(e.end_span);
            }
            NodeKind::Text(t) => sink.text(t),
            NodeKind::Comment(t) => sink.comment(t),
            NodeKind::Pi { target, data } => sink.pi(target, data),
        }
    }

    /// Replays the whole document, leaving out `skip` (the enveloped
    /// signature) and its descendants.
    pub fn replay_document<S: Sink>(&self, skip: Option<NodeId>, sink: &mut S) {
        for &t in &self.top {
            self.replay(t, skip, sink);
        }
    }

    /// The namespace a prefix is bound to at `id` (`""` for the default).
    pub fn lookup_prefix(&self, id: NodeId, prefix: &str) -> Option<&str> {
        let mut cur = Some(id);
        while let Some(n) = cur {
            if let Some(e) = self.element(n) {
                if let Some((_, u)) = e.ns_decls.iter().find(|(p, _)| p == prefix) {
                    return Some(u);
                }
            }
            cur = self.parent(n);
        }
        (prefix == "xml").then_some(super::reader::XML_NS)
    }

    /// Ancestors of `id`, outermost first.
    pub fn ancestors(&self, id: NodeId) -> Vec<NodeId> {
        let mut v = Vec::new();
        let mut cur = self.parent(id);
        while let Some(p) = cur {
            v.push(p);
            cur = self.parent(p);
        }
        v.reverse();
        v
    }

    /// Canonicalises the subtree at `id` as a document subset: ancestors
    /// contribute namespace context but are not output.
    pub fn canonicalize_subtree<O: super::c14n::Output>(
        &self,
        id: NodeId,
        opts: &super::c14n::Options,
        out: O,
    ) -> O {
        let mut c = super::c14n::Canonicalizer::new(out, opts);
        for a in self.ancestors(id) {
            if let Some(e) = self.element(a) {
                c.enter_context(&Self::as_element(e, SmallVec::new()));
            }
        }
        self.replay(id, None, &mut c);
        c.finish()
    }

    /// Canonicalises the document without the subtree at `skip`.
    pub fn canonicalize_without<O: super::c14n::Output>(
        &self,
        skip: Option<NodeId>,
        opts: &super::c14n::Options,
        out: O,
    ) -> O {
        let mut c = super::c14n::Canonicalizer::new(out, opts);
        self.replay_document(skip, &mut c);
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::c14n::{canonicalize, Options};
    use super::*;

    #[test]
    fn replay_equals_streaming() {
        let doc = "<?p x?><!--a--><r xmlns='u' xmlns:q='v'>t&amp;x<q:c q:a='1'>y</q:c><!--b--></r>";
        let d = Document::parse(doc.as_bytes(), &Limits::default()).unwrap();
        for opts in [
            Options::exclusive(),
            Options::default(),
            Options {
                with_comments: true,
                ..Options::exclusive()
            },
        ] {
            let tree = d.canonicalize_without(None, &opts, Vec::new());
            let stream = canonicalize(doc.as_bytes(), &opts, &Limits::default()).unwrap();
            assert_eq!(tree, stream.as_bytes());
        }
        let c = d.find_all("v", "c")[0];
        assert_eq!(d.text(d.root()), "t&xy");
        assert_eq!(
            d.canonicalize_subtree(c, &Options::exclusive(), Vec::new()),
            b"<q:c xmlns:q=\"v\" q:a=\"1\">y</q:c>"
        );
        assert_eq!(
            d.canonicalize_without(Some(c), &Options::exclusive(), Vec::new()),
            b"<?p x?>\n<r xmlns=\"u\">t&amp;x</r>"
        );
    }
}
