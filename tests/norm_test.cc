#include "engine/script/norm.h"

#include <phonenumbers/phonenumberutil.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

using namespace weft::norm;

namespace {

// The value, or "FAIL: <reason>" so a failing CHECK shows why.
std::string val(const Result& r) { return r.ok() ? *r.value : "FAIL: " + r.reason; }

bool fails_with(const Result& r, const std::string& fragment) {
  return !r.ok() && r.reason.find(fragment) != std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// trim / lower

TEST_CASE("trim removes ASCII whitespace and no-break spaces at both ends", "[norm]") {
  CHECK(trim("  hello \t\r\n") == "hello");
  CHECK(trim("\xC2\xA0 hello\xC2\xA0") == "hello");
  CHECK(trim("a b") == "a b");
  CHECK(trim("a\xC2\xA0" "b") == "a\xC2\xA0" "b");
  CHECK(trim("") == "");
  CHECK(trim(" \t \xC2\xA0 ") == "");
  CHECK(trim("x") == "x");
  // A lone 0xC2 at the end is not a no-break space and is left alone.
  CHECK(trim("x\xC2") == "x\xC2");
}

TEST_CASE("lower is Unicode lowercase and refuses invalid UTF-8", "[norm]") {
  CHECK(val(lower("HeLLo")) == "hello");
  CHECK(val(lower("ÅÄÖ ÉÜ")) == "åäö éü");
  CHECK(val(lower("ΣΑΣ")) == "σας");  // final sigma, as JavaScript's toLowerCase
  CHECK(val(lower("")) == "");
  CHECK(fails_with(lower("\xff"), "invalid UTF-8"));
  CHECK(fails_with(lower("abc\xC3"), "invalid UTF-8"));          // truncated sequence
  CHECK(fails_with(lower("\xC0\xAF"), "invalid UTF-8"));         // overlong '/'
  CHECK(fails_with(lower("\xED\xA0\x80"), "invalid UTF-8"));     // surrogate
}

// ---------------------------------------------------------------------------------------------
// email

TEST_CASE("email trims, lowercases and accepts real addresses", "[norm]") {
  CHECK(val(email("  Anna@Example.COM ")) == "anna@example.com");
  CHECK(val(email("LÉA.MÜLLER@EXAMPLE.COM")) == "léa.müller@example.com");
  CHECK(val(email("first.last+tag@sub.example.co.uk")) == "first.last+tag@sub.example.co.uk");
  CHECK(val(email("o'brien@my-domain.ie")) == "o'brien@my-domain.ie");
  CHECK(val(email("user@bücher.de")) == "user@bücher.de");
  CHECK(val(email("\xC2\xA0x@y.se\xC2\xA0")) == "x@y.se");
}

TEST_CASE("email refuses malformed addresses with a specific reason", "[norm]") {
  CHECK(email("anna.example.com").reason == "not an email address: missing '@'");
  CHECK(email("anna@@example.com").reason == "not an email address: more than one '@'");
  CHECK(email("a@b@example.com").reason == "not an email address: more than one '@'");
  CHECK(email("anna@example").reason == "not an email address: domain has no dot");
  CHECK(email("").reason == "not an email address: empty");
  CHECK(email("   ").reason == "not an email address: empty");
  CHECK(fails_with(email("anna smith@example.com"), "contains a space"));
  CHECK(fails_with(email("anna@exa mple.com"), "contains a space"));
  CHECK(fails_with(email("anna@example.com\xC2\xA0x"), "contains a space"));
  CHECK(fails_with(email("anna\t@example.com"), "contains a space"));
  CHECK(fails_with(email("an\x01na@example.com"), "control character"));
  CHECK(fails_with(email("\xEF\xBB\xBF" "anna@example.com"), "control character (U+FEFF)"));
  CHECK(fails_with(email("@example.com"), "nothing before '@'"));
  CHECK(fails_with(email("anna@"), "nothing after '@'"));
  CHECK(fails_with(email("anna@.example.com"), "empty label"));
  CHECK(fails_with(email("anna@example.com."), "empty label"));
  CHECK(fails_with(email("anna@example..com"), "empty label"));
  CHECK(fails_with(email("anna@-example.com"), "starts or ends with '-'"));
  CHECK(fails_with(email("anna@example-.com"), "starts or ends with '-'"));
  CHECK(fails_with(email("anna@exam_ple.com"), "invalid character '_' in domain"));
  CHECK(fails_with(email("<anna@example.com>"), "invalid character '<'"));
  CHECK(fails_with(email(".anna@example.com"), "'.'"));
  CHECK(fails_with(email("an..na@example.com"), "'.'"));
  CHECK(fails_with(email("\xff@example.com"), "invalid UTF-8"));
}

TEST_CASE("email enforces RFC 5321 length limits", "[norm]") {
  const std::string local64(64, 'a');
  CHECK(val(email(local64 + "@example.com")) == local64 + "@example.com");
  CHECK(fails_with(email(std::string(65, 'a') + "@example.com"), "longer than 64 bytes"));
  // 64 + 1 + 189 = 254 bytes is the maximum.
  const std::string domain189 = std::string(58, 'b') + "." + std::string(60, 'c') + "." + std::string(63, 'd') + ".co.se";
  REQUIRE(domain189.size() == 189);
  CHECK(email(local64 + "@" + domain189).ok());
  CHECK(fails_with(email(local64 + "@e" + domain189), "longer than 254 bytes"));
}

// ---------------------------------------------------------------------------------------------
// phone

TEST_CASE("phone formats national and international numbers as E.164", "[norm]") {
  CHECK(val(phone("070-123 45 67", "SE")) == "+46701234567");
  CHECK(val(phone("08-123 456 78", "SE")) == "+46812345678");
  CHECK(val(phone("0151 23456789", "DE")) == "+4915123456789");
  CHECK(val(phone("(201) 555-0123", "US")) == "+12015550123");
  CHECK(val(phone("+44 7400 123456", "")) == "+447400123456");
  CHECK(val(phone("+44 7400 123456", "SE")) == "+447400123456");
  CHECK(val(phone("+44 7400 123456", "US")) == "+447400123456");
  CHECK(val(phone("  070-123 45 67  ", "se")) == "+46701234567");  // region case and spaces do not matter
  CHECK(val(phone("0046 70 123 45 67", "SE")) == "+46701234567");  // international prefix from Sweden
}

TEST_CASE("phone refuses what libphonenumber does not consider valid", "[norm]") {
  CHECK(phone("", "SE").reason == "empty phone number");
  CHECK(phone("   ", "SE").reason == "empty phone number");
  CHECK(phone("abc", "SE").reason == "not a phone number");
  CHECK(phone("123", "SE").reason == "not a valid number for region SE");
  CHECK(fails_with(phone("0701234567", ""), "no default region"));
  CHECK(fails_with(phone("070-123 45 67", "XX"), "unknown default region 'XX'"));
  CHECK(phone("+1 200 555 0123", "").reason == "not a valid number for region US");  // no area code 200
  // Ofcom's range for drama (07700 900xxx) is deliberately unallocated.
  CHECK(phone("+44 7700 900123", "SE").reason == "not a valid number for region GB");
  CHECK(fails_with(phone("+999 123456", "SE"), "invalid country code"));
  CHECK(fails_with(phone("12345678901234567890", "SE"), "too long"));
  CHECK(fails_with(phone("+46 0", "SE"), "too short"));
  CHECK(fails_with(phone("+46 70 123 45 67 ext. 12", "SE"), "extension"));
  CHECK(fails_with(phone("070\xff", "SE"), "invalid UTF-8"));
}

TEST_CASE("phone gives what libphonenumber gives for the text as written, formatting and all", "[norm]") {
  // weft drops the formatting of a plainly written number before parsing it (it is faster);
  // the outcome must be what parsing the text as written gives, valid or not.
  using i18n::phonenumbers::PhoneNumber;
  using i18n::phonenumbers::PhoneNumberUtil;
  const PhoneNumberUtil* util = PhoneNumberUtil::GetInstance();
  const std::vector<std::string> inputs = {
      "070-123 45 67", "0151 62010808", "(201) 555-0123", "(201) 555-0100", "07700 900123", "06 12 34 56 78",
      "+1 (650) 253-0000", "+1.650.253.0000", "1-650-253-0000", "1 (650) 253 0000", "650.253.0000",
      "+44 (0) 20 7946 0000", "(0) 20 7946 0000", "020 7946 0000", "0046-70-123.45.67", "00 1 650 253 0000",
      "011 46 70 123 45 67", "+46 (0)70-123 45 67", "+4670123456", "+ 46 70 123 45 67", "((070)) 123--45..67",
      "070-123 45 67 ext. 12", "+1 650 253 0000 x123", "1-800-FLOWERS", "(+46) 70 123 45 67", "070/123 45 67",
      "+", "()", "-", "12", "123", "+46 0", "0", "+999 123456", "12345678901234567890", "+46 70 123 45 67 89 01 23",
      "1 2", "1-2", "1.2", "(1) 2", "+1 2", "12 3", "1 23 4"};
  int checked = 0;
  for (const char* region : {"SE", "US", "GB", "DE", "FR", "ZZ"}) {
    for (const auto& in : inputs) {
      PhoneNumber n;
      std::string expected;
      bool parsed = util->Parse(in, region, &n) == PhoneNumberUtil::NO_PARSING_ERROR;
      bool valid = parsed && util->IsValidNumber(n);
      bool ok = valid && !(n.has_extension() && !n.extension().empty());
      if (ok) util->Format(n, PhoneNumberUtil::E164, &expected);
      auto r = phone(in, std::string(region) == "ZZ" ? "" : region);
      INFO(in << " in " << region << ": " << (r.ok() ? *r.value : r.reason));
      CHECK(r.ok() == ok);
      if (ok && r.ok()) CHECK(*r.value == expected);
      // A refusal gives the same kind of reason: not parsed, not valid, or an extension.
      bool says_invalid = r.reason.rfind("not a valid number", 0) == 0;
      bool says_extension = r.reason.find("extension") != std::string::npos;
      if (!parsed) CHECK((!says_invalid && !says_extension));
      if (parsed && !valid) CHECK(says_invalid);
      if (valid && !ok) CHECK(says_extension);
      ++checked;
    }
  }
  CHECK(checked == 6 * static_cast<int>(inputs.size()));
}

TEST_CASE("phone answers the same for a number seen before, per region, past the memo's size", "[norm]") {
  // norm.phone keeps recent answers by region and text; a kept answer must never be another
  // region's, and dropping them (every few thousand) must change nothing.
  auto de = phone("030 1234567", "DE"), se = phone("030 1234567", "SE"), us = phone("030 1234567", "US");
  CHECK(val(de) == "+49301234567");
  CHECK(se.value != de.value);  // the same text is another number in Sweden, or none
  CHECK_FALSE(us.ok());
  CHECK(val(phone("030-123 45 67", "DE")) == "+49301234567");  // the same digits, written otherwise
  CHECK(val(phone("030 1234567", "de")) == "+49301234567");
  CHECK(phone("030 1234567", "US").reason == us.reason);
  int wrong = 0;
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 5000; ++i) {
      char in[32], want[32];
      std::snprintf(in, sizeof in, "070-%03d %02d %02d", i % 1000, (i / 1000) % 100, i % 97);
      std::snprintf(want, sizeof want, "+4670%03d%02d%02d", i % 1000, (i / 1000) % 100, i % 97);
      auto r = phone(in, "SE");
      if (!r.ok() || *r.value != want) ++wrong;
    }
  CHECK(wrong == 0);
  CHECK(val(phone("030 1234567", "DE")) == "+49301234567");
  CHECK(phone("030 1234567", "SE").value == se.value);
  // A region is whatever text a script passes: one with a newline in it is not another
  // call's region and text run together.
  CHECK(val(phone("0701234567\n-", "SE")) == "+46701234567");
  CHECK_FALSE(phone("-", "SE\n0701234567").ok());
}

TEST_CASE("phone refuses input longer than libphonenumber's 250-byte maximum without parsing it", "[norm]") {
  CHECK(phone(std::string(250 - 4, '1') + "0701", "SE").reason != "not a phone number: longer than 250 bytes");
  CHECK(phone(std::string(251, '1'), "SE").reason == "not a phone number: longer than 250 bytes");
  CHECK(val(phone("   070-123 45 67" + std::string(300, ' '), "SE")) == "+46701234567");  // measured after trimming
  auto start = std::chrono::steady_clock::now();
  CHECK(phone(std::string(100000, '1'), "SE").reason == "not a phone number: longer than 250 bytes");
  CHECK(phone("+46 " + std::string(1 << 20, '7'), "").reason == "not a phone number: longer than 250 bytes");
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
}

// ---------------------------------------------------------------------------------------------
// datetime / date

TEST_CASE("datetime accepts the documented formats", "[norm]") {
  CHECK(val(datetime("2024-01-01T00:00:00Z")) == "2024-01-01T00:00:00Z");
  CHECK(val(datetime("2024-01-01T00:00:00.000Z")) == "2024-01-01T00:00:00Z");           // commercetools
  CHECK(val(datetime("2013-05-20T20:49:32.000+0000")) == "2013-05-20T20:49:32Z");       // Salesforce
  CHECK(val(datetime("2024-03-01T10:00:00.123Z")) == "2024-03-01T10:00:00.123Z");
  CHECK(val(datetime("2024-03-01 10:00:00.123Z")) == "2024-03-01T10:00:00.123Z");       // space separator
  CHECK(val(datetime("2024-03-01T10:00:00.1Z")) == "2024-03-01T10:00:00.100Z");
  CHECK(val(datetime("2024-03-01T10:00:00.123999999Z")) == "2024-03-01T10:00:00.123Z");  // truncated, not rounded
  CHECK(val(datetime("2024-03-01T10:00:00.0004Z")) == "2024-03-01T10:00:00Z");
  CHECK(val(datetime("2024-01-01T01:30:00+01:30")) == "2024-01-01T00:00:00Z");
  CHECK(val(datetime("2024-01-01T01:30:00+0130")) == "2024-01-01T00:00:00Z");
  CHECK(val(datetime("2024-01-01T10:00:00+05")) == "2024-01-01T05:00:00Z");
  CHECK(val(datetime("2024-01-01T23:30:00-02:00")) == "2024-01-02T01:30:00Z");
  CHECK(val(datetime("2024-03-01T00:30:00+01:00")) == "2024-02-29T23:30:00Z");  // leap day across the offset
  CHECK(val(datetime("2024-01-01")) == "2024-01-01T00:00:00Z");
  CHECK(val(datetime(" 2024-01-01T00:00:00Z ")) == "2024-01-01T00:00:00Z");
  CHECK(val(datetime("1700000000123")) == "2023-11-14T22:13:20.123Z");
  CHECK(val(datetime("100000000000")) == "1973-03-03T09:46:40Z");  // 12 digits
}

TEST_CASE("datetime refuses ambiguous, impossible and trailing input", "[norm]") {
  CHECK(fails_with(datetime("2024-01-01T10:00:00"), "no time zone offset"));
  CHECK(fails_with(datetime("2024-01-01T24:00:00Z"), "hour 24 out of range"));
  CHECK(fails_with(datetime("2024-01-01T10:60:00Z"), "minute 60 out of range"));
  CHECK(fails_with(datetime("2024-01-01T10:00:60Z"), "second 60 out of range"));
  CHECK(fails_with(datetime("2023-02-30"), "2023-02-30 does not exist"));
  CHECK(fails_with(datetime("2023-02-29T00:00:00Z"), "does not exist"));
  CHECK(fails_with(datetime("2024-13-01"), "does not exist"));
  CHECK(fails_with(datetime("2024-01-00"), "does not exist"));
  CHECK(fails_with(datetime("2024-01-01T10:00:00Zjunk"), "unexpected 'junk'"));
  CHECK(datetime("2024-01-01T10:00:00+01:00 ").ok());  // surrounding whitespace is trimmed, not garbage
  CHECK(fails_with(datetime("2024-01-01x"), "unexpected 'x' after the date"));
  CHECK(fails_with(datetime("2024-01-01T10:00Z"), "expected HH:MM:SS"));
  CHECK(fails_with(datetime("2024-01-01T10:00:00.Z"), "digits after '.'"));
  CHECK(fails_with(datetime("2024-01-01T10:00:00+25:00"), "offset +25:00 out of range"));
  CHECK(fails_with(datetime("2024-01-01T10:00:00+01:60"), "out of range"));
  CHECK(fails_with(datetime("2024-01-01T10:00:00+1"), "expected hh"));
  CHECK(fails_with(datetime("2024-01-01T10:00:00 CET"), "expected 'Z'"));
  CHECK(fails_with(datetime("01/02/2024"), "expected YYYY-MM-DD"));
  CHECK(fails_with(datetime("24-01-01"), "expected YYYY-MM-DD"));
  CHECK(fails_with(datetime("2024-1-1"), "expected YYYY-MM-DD"));
  CHECK(fails_with(datetime("1700000000"), "epoch milliseconds"));   // epoch seconds are not guessed
  // A compact YYYYMMDDHHMMSS is not read as milliseconds of the year 2611.
  CHECK(fails_with(datetime("20240501123000"), "YYYYMMDDHHMMSS without an offset"));
  CHECK(fails_with(datetime("20240101"), "epoch milliseconds"));
  CHECK(fails_with(datetime("0000-01-01T00:00:00+01:00"), "outside years 0000-9999"));
  CHECK(datetime("").reason == "not a timestamp: empty");
  CHECK(fails_with(datetime("\xff"), "not a timestamp"));
}

TEST_CASE("date gives the UTC calendar date", "[norm]") {
  CHECK(val(date("2024-01-01")) == "2024-01-01");
  CHECK(val(date("2024-02-29")) == "2024-02-29");
  CHECK(val(date("2024-01-01T23:30:00-02:00")) == "2024-01-02");
  CHECK(val(date("2024-01-01T00:30:00+01:00")) == "2023-12-31");
  CHECK(val(date("2013-05-20T20:49:32.000+0000")) == "2013-05-20");
  CHECK(val(date("2024-03-01 10:00:00Z")) == "2024-03-01");
  CHECK(val(date("1700000000123")) == "2023-11-14");
  CHECK(fails_with(date("2023-02-30"), "not a date: 2023-02-30 does not exist"));
  CHECK(fails_with(date("2024-01-01T10:00:00"), "no time zone offset"));
  CHECK(fails_with(date("2024-01-01 garbage"), "not a date"));
  CHECK(date("").reason == "not a date: empty");
}

TEST_CASE("datetime_ms formats epoch milliseconds", "[norm]") {
  CHECK(val(datetime_ms(0)) == "1970-01-01T00:00:00Z");
  CHECK(val(datetime_ms(1700000000123)) == "2023-11-14T22:13:20.123Z");
  CHECK(val(datetime_ms(1700000000000)) == "2023-11-14T22:13:20Z");
  CHECK(val(datetime_ms(-1)) == "1969-12-31T23:59:59.999Z");
  CHECK(val(datetime_ms(253402300799999)) == "9999-12-31T23:59:59.999Z");
  CHECK(fails_with(datetime_ms(253402300800000), "outside years 0000-9999"));
  CHECK(fails_with(datetime_ms(INT64_MAX), "outside years"));
  CHECK(fails_with(datetime_ms(INT64_MIN), "outside years"));
}

// ---------------------------------------------------------------------------------------------
// country

TEST_CASE("country maps names and codes to alpha-2", "[norm]") {
  for (const char* s : {"Sweden", "sweden", "SWE", "swe", "752", "se", "SE", "  Sweden ", "Kingdom of Sweden"})
    CHECK(val(country(s)) == "SE");
  CHECK(val(country("Germany")) == "DE");
  CHECK(val(country("DEU")) == "DE");
  CHECK(val(country("United States")) == "US");
  CHECK(val(country("United States of America")) == "US");
  CHECK(val(country("840")) == "US");
  CHECK(val(country("United Kingdom")) == "GB");
  CHECK(val(country("South Korea")) == "KR");   // common_name
  CHECK(val(country("Bolivia")) == "BO");       // common_name
  CHECK(val(country("068")) == "BO");
  CHECK(val(country("68")) == "BO");            // numeric code that lost its leading zero
  CHECK(val(country("ÅLAND ISLANDS")) == "AX");  // non-ASCII names are case-insensitive too
  CHECK(val(country("Türkiye")) == "TR");
}

TEST_CASE("country refuses unknown input", "[norm]") {
  CHECK(country("Atlantis").reason == "not a known country: 'Atlantis'");
  CHECK(!country("").ok());
  CHECK(!country("XX").ok());
  CHECK(!country("999").ok());
  CHECK(!country("Swe den").ok());
  CHECK(fails_with(country("\xff"), "invalid UTF-8"));
}

// ---------------------------------------------------------------------------------------------
// money

TEST_CASE("money converts minor units", "[norm]") {
  std::string why;
  CHECK(money(1999, 2, &why) == 19.99);
  CHECK(money(500, 0, &why) == 500.0);
  CHECK(money(5, 3, &why) == 0.005);
  CHECK(money(-1999, 2, &why) == -19.99);
  CHECK(money(0, 2, &why) == 0.0);
  CHECK(money(123456789, 8, &why) == 1.23456789);
  CHECK(why.empty());
}

TEST_CASE("money refuses fraction digits outside 0..8", "[norm]") {
  std::string why;
  CHECK(!money(1999, 9, &why).has_value());
  CHECK(why.find("fraction digits 9") != std::string::npos);
  why.clear();
  CHECK(!money(1999, -1, &why).has_value());
  CHECK(!why.empty());
  CHECK(!money(1999, 9, nullptr).has_value());  // reason pointer is optional
}

// ---------------------------------------------------------------------------------------------
// threads

TEST_CASE("norm functions give the same answers from several threads", "[norm]") {
  std::atomic<int> wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t)
    workers.emplace_back([&wrong] {
      for (int i = 0; i < 200; ++i) {
        if (val(country("sweden")) != "SE") ++wrong;
        if (val(phone("070-123 45 67", "SE")) != "+46701234567") ++wrong;
        if (val(email(" Anna@Example.COM")) != "anna@example.com") ++wrong;
        if (val(datetime("2024-01-01T01:30:00+01:30")) != "2024-01-01T00:00:00Z") ++wrong;
      }
    });
  for (auto& w : workers) w.join();
  CHECK(wrong == 0);
}
