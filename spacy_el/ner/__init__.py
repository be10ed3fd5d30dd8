"""BiLSTM named-entity tagger: thinc architecture and the `bilstm_ner` component."""
