//! CONTRACT STUB — replaced by the real implementation.
#[derive(Clone, Debug, Default)]
pub struct Redactor {}
impl Redactor {
    pub fn new(_secret_values: Vec<String>) -> Self {
        Redactor {}
    }
    pub fn redact(&self, text: &str) -> String {
        text.to_string()
    }
    pub fn redact_json(&self, _value: &mut serde_json::Value) {}
}
