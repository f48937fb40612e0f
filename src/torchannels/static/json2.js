/* json2.js is no longer needed: every browser torchannel.js supports has a
 * native JSON object. This empty file exists only so that pages written for
 * the 2009 TorChannels, which load {{ static_url('json2.js') }}, keep working
 * unchanged. */
