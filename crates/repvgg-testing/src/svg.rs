//! SVG pictures as the tests read them: parsed as XML (so a malformed file fails), flattened to
//! their elements with attributes and text.

use std::collections::BTreeMap;
use std::path::Path;

use xml::reader::{EventReader, XmlEvent};

/// One element of the picture.
#[derive(Clone, Debug)]
pub struct Element {
    /// Its tag (`polyline`, `text`, ...).
    pub name: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
    /// The text directly inside it.
    pub text: String,
}

impl Element {
    /// The attribute `name`, or "".
    pub fn attribute(&self, name: &str) -> &str {
        self.attributes.get(name).map_or("", String::as_str)
    }

    /// A polyline's `points`, as numbers.
    pub fn points(&self) -> Vec<(f64, f64)> {
        self.attribute("points")
            .split_whitespace()
            .map(|pair| {
                let (x, y) = pair.split_once(',').expect("points are x,y pairs");
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }
}

/// A parsed SVG document, its elements in document order (the root first).
#[derive(Clone, Debug)]
pub struct Svg {
    /// Every element.
    pub elements: Vec<Element>,
}

impl Svg {
    /// Parses `text`, which must be well-formed XML whose root is an `svg` element.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut elements = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        for event in EventReader::new(text.as_bytes()) {
            match event.map_err(|err| err.to_string())? {
                XmlEvent::StartElement {
                    name, attributes, ..
                } => {
                    open.push(elements.len());
                    elements.push(Element {
                        name: name.local_name,
                        attributes: attributes
                            .into_iter()
                            .map(|a| (a.name.local_name, a.value))
                            .collect(),
                        text: String::new(),
                    });
                }
                XmlEvent::EndElement { .. } => {
                    open.pop();
                }
                XmlEvent::Characters(text) => {
                    if let Some(&index) = open.last() {
                        elements[index].text.push_str(&text);
                    }
                }
                _ => {}
            }
        }
        match elements.first() {
            Some(root) if root.name == "svg" => Ok(Self { elements }),
            _ => Err("the root element is not <svg>".to_string()),
        }
    }

    /// Reads and parses the file `path`; panics naming it when it is not an SVG picture.
    pub fn read(path: &Path) -> Self {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        Self::parse(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    /// The elements with tag `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements.iter().filter(move |e| e.name == name)
    }

    /// The texts of the `text` elements, in order.
    pub fn texts(&self) -> Vec<&str> {
        self.all("text").map(|e| e.text.trim()).collect()
    }
}
