"""The one prompt-injection detector: used by the reference auditor (record comments) and by the
server's guardrail (user messages, retrieved chunks). Plain Python, no dagster: rules first, then
for what they let pass a small scikit-learn classifier trained at first use
(synthetic/injection_model.py; `prepare` builds it ahead of time).

It looks for concepts, not for the benchmark's wording:

1. normalise: Unicode NFKC (full-width letters), invisible characters removed (zero-width,
   bidi controls: category Cf), case folded; then variants of the text are screened too:
   look-alike letters folded to Latin (confusable-homoglyphs' table), leetspeak undone, spaced
   letters joined, base64 / hex runs decoded.
2. split into segments: lines, and the string values of a line that is a JSON object (a batch
   record), so cues of different fields or of a long prompt are never added up.
3. cues per segment. Strong cues decide alone (chat-template or role tokens, "ignore the previous
   instructions", role-play, asking for the system prompt). Weak cues need a second weak cue of
   another kind in the same segment: addressed to an AI / model / auditor / reviewer, an order
   to suppress findings, a claimed authority, a claimed test or maintenance mode, a fake answer
   or tool call, a reset of the task. Each cue has forms in English and several other languages
   (the patterns below list them).
4. the classifier (character and word n-grams of the normalised readings, logistic regression)
   scores the segments the rules did not flag; at or over its threshold, the text is flagged.

What it misses is measured, not guessed: bench/bench_injection_detection.py prints the rates per
family (held-out families included) and on benign batch-record comments (docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

_F = re.IGNORECASE


def _rx(*parts: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in parts), _F)


# --- cues ------------------------------------------------------------------------------------
_INSTR = (r"instructions?|prompts?|rules|directions|directives|guidelines|guardrails|constraints"
          r"|programming|polic(?:y|ies)|system\s+prompt|task|context|orders")
_OVERRIDE_EN = (
    r"\b(?:ignore|disregard|forget|overrule|override|bypass|discard|drop|abandon|set\s+aside)\s+"
    r"(?:(?:all|any|every|the|your|my|of|these|those|previous|prior|above|earlier|preceding|"
    r"original|existing|current|old|system|safety|audit|standard|usual|given)\s+){0,4}"
    rf"(?:{_INSTR})\b",
    r"\b(?:ignore|disregard|forget)\s+(?:(?:everything|all|anything|what(?:ever)?|the|text|"
    r"content|messages?|written|said|stated|you\s+(?:were|have\s+been)\s+told)\s+){0,3}"
    r"(?:above|before|previously|so\s+far|earlier)\b",
)
_OVERRIDE_INTL = (
    r"\b(?:ignorier\w*|vergiss|vergessen\s+sie|missachte\w*|übergeh\w*)\b[^.;\n]{0,40}?"
    r"\b(?:anweisung\w*|instruktion\w*|regeln|vorgaben|befehle)",
    r"\b(?:ignor(?:e[rz]?|ons)|oubli(?:e[rz]?|ons))\b[^.;\n]{0,40}?\b(?:instructions?|consignes?"
    r"|règles|directives)",
    r"\b(?:ignor[ae](?:r|d)?|olvid[ae](?:r|d)?|omit[ae])\b[^.;\n]{0,40}?\b(?:instrucciones|reglas"
    r"|indicaciones|órdenes|istruzioni|regole|instruções|regras)",
    r"\b(?:dimentica|esqueça|esqueca)\b[^.;\n]{0,40}?\b(?:istruzioni|regole|instruções|regras)",
    r"(?:忽略|无视|忽视|忘记|不要理会|忘掉)[^。；\n]{0,20}?(?:指令|指示|说明|规则|提示|要求)",
    r"(?:以前の|前の)?(?:指示|命令|ルール)を?(?:無視|忘れ)",
    r"(?:игнорируй|забудь)\w*[^.;\n]{0,30}?(?:инструкци|правил)",
    r"\b(?:negeer|vergeet)\b[^.;\n]{0,40}?\b(?:instructies|regels|opdrachten)\b|\b(?:zignoruj|"
    r"ignoruj|zapomnij)\b[^.;\n]{0,40}?\b(?:polecen\w*|instrukcj\w*|zasad\w*)",
)
_ROLE_TOKENS = (
    r"<\|\s*[a-z_]+\s*\|>", r"\[/?inst\]", r"<</?sys>>", r"</s>\s*<s>|</s>",
    r"(?:^|\n)\s*#{1,4}\s*(?:system|assistant|developer|instruction|response)\s*:",
    r"\[\s*(?:system|assistant|developer|admin)(?:\s+(?:message|prompt|note|override|update))?"
    r"\s*\]",
    r"</?\s*(?:system|assistant|developer|instructions?)\s*>",
    r"\"role\"\s*:\s*\"(?:system|developer|assistant)\"",
)
_ROLE_PLAY = (
    r"\byou\s+are\s+now\b|\byou'?re\s+now\b|\bfrom\s+now\s+on,?\s+you\b",
    r"\bpretend\s+(?:to\s+be|(?:that\s+)?you\b)|\bimagine\s+(?:that\s+)?you\s+are\b|\bact\s+as\s+if"
    r"\s+you\b",
    r"\brole-?\s?play\b|\bplay\s+the\s+(?:role|part)\b|\bstay\s+in\s+character\b",
    r"\bjailbr(?:oken|eak)\b|\bdeveloper\s+mode\b|\bgod\s+mode\b|\bunrestricted\s+(?:ai|model|"
    r"assistant|mode|version)\b|\bunfiltered\s+(?:ai|model|assistant|mode)\b",
    r"\bdu\s+bist\s+(?:jetzt|nun|ab\s+sofort)\b|\btu\s+es\s+maintenant\b|\bvous\s+êtes\s+"
    r"maintenant\b|\bahora\s+eres\b|\bfinge\s+(?:ser|que)\b|\bora\s+sei\b|\bagora\s+você\s+é\b",
    r"你现在是|扮演|假装你|从现在开始你",
)
_EXFILTRATE = (
    r"\b(?:reveal|show|print|repeat|output|leak|display|tell\s+me|what\s+(?:is|are)|give\s+me)\b"
    r"[^.\n]{0,30}?\b(?:system|hidden|initial|original|secret)\s+(?:prompt|instructions?|message)",
)
_AI_NOUN = (r"(?:ai|a\.i\.|llms?|gpt-?\w*|chatgpt|claude|gemini|language\s+models?|models?|"
            r"assistants?|chat-?bots?|bots?|automated\s+\w+|ai\s+\w+|ki|ia|l'ia|ии|人工智能|模型)")
_EXPLICIT_ADDRESS = (
    r"\b(?:note|message|instructions?|attention|reminder|memo|notice|important|hint|info|ps)\s*"
    rf"(?:to|for)\s+(?:the\s+|any\s+|all\s+|whichever\s+)?{_AI_NOUN}\b",
    rf"\b(?:dear|hey|hi|hello|yo|attention|attn)\s*,?\s+{_AI_NOUN}\b",
    rf"\b(?:if|when)\s+you\s+are\s+(?:an?\s+)?{_AI_NOUN}\b|\bto\s+(?:the|any)\s+{_AI_NOUN}\s+"
    r"(?:reading|reviewing|processing|auditing)\b",
    r"\b(?:hinweis|nachricht|anweisung)\s+(?:für|an)\s+(?:die|das|den)\s+(?:ki|modell|prüf\w*)|"
    r"\bnote\s+(?:pour|à)\s+l'ia\b|\bnota\s+(?:para|per)\s+(?:la|il|l'|a)\s*(?:ia|modelo|modello)\b|"
    r"\bopmerking\s+voor\s+de\s+ai\b|\buwaga\s+dla\s+(?:modelu|ai)\b|致.{0,8}(?:模型|人工智能|ai)|"
    r"(?:ai|ии)[-\w]*\s*(?:へ|для)|для\s+ии",
)
_DAN = re.compile(r"\bDAN\b")  # case-sensitive: "Dan" is a name

_ADDRESSEE = (
    r"\b(?:a\.?i|llms?|gpt-?\w*|chatgpt|claude|gemini|chat-?bots?|bots?|copilot)\b",
    r"\b(?:language|ai|audit|review|reviewing|screening)\s+(?:models?|systems?|tools?|agents?|"
    r"engines?|pipelines?)\b|\bthe\s+models?\b|\bassistants?\b",
    r"\b(?:auditors?|reviewers?)\b|\bautomated\s+(?:reviews?|checks?|audits?|systems?|tools?|"
    r"reviewers?|auditors?)\b",
    r"\byou\b|\byour\b|\byourself\b",
    r"\b(?:ki|künstliche\s+intelligenz|sprachmodell|prüfer\w*|ia|l'ia|modèle\s+de\s+langage|"
    r"auditeur|réviseur|vous|inteligencia\s+artificial|modelo\s+de\s+lenguaje|revisor|auditora?|"
    r"asistente|assistente|modello|intelligenza\s+artificiale|revisore|du|dir|dich|tu|usted)\b",
    r"\b(?:checking|review|reviewing|audit|auditing|compliance|automated|automatic|screening|ai)\s+"
    r"(?:software|engines?|programs?|tools?|checkers?|reviewers?|auditors?)\b|\bchecker\b|"
    r"\bany\s+(?:model|ai|tool|system)\b|\bwho(?:ever)?\s+(?:checks|reviews|reads|audits|"
    r"processes)\b|\bprüf\w*|\b(?:sistema|système|sistem)\s+(?:de\s+|d'|di\s+)?(?:auditor[ií]a|audit|revisión|"
    r"revue|revisione|revisão|controle|control)\b|\bwho(?:ever)?\s+or\s+what(?:ever)?\b|"
    r"\bwhat(?:ever|soever)\s+(?:reviews|reads|audits|checks|processes)\b",
    r"人工智能|智能助手|助手|模型|审核员|审计员|审核|审计|你|您|ＡＩ|監査|アシスタント|モデル",
)
_FINDING = (r"(?:deviations?|findings?|issues?|flags?|errors?|problems?|non-?conformit(?:y|ies)"
            r"|observations?|anomal(?:y|ies)|discrepanc(?:y|ies)|warnings?|violations?|anything)")
_SUPPRESS = (
    r"\b(?:report|return|output|answer|respond|reply|list|record|give|produce|write|submit|state|"
    r"declare|conclude|show|log|enter|find|raise|flag|print|emit|send|keep|leave|confirm|close|"
    r"finish|come\s+back)(?:s|es)?\s+"
    r"(?:with\s+)?(?:only\s+)?"
    r"(?:no|zero|0|an?\s+empty|empty|nothing|none|null|an?\s+clean|clean)\b",
    r"\b(?:do\s+not|don'?t|dont|never|must\s+not|mustn'?t|should\s+not|shouldn'?t|shall\s+not|"
    r"may\s+not|cannot|can'?t|no\s+need\s+to|refrain\s+from|avoid|stop|without)\s+(?:\w+\s+){0,2}?"
    r"(?:flag|report|rais|list|mention|log|record|includ|escalat|not|output|return)\w*\b",
    r"\bnot\s+(?:\w+\s+){0,1}?(?:flag|report|rais|mention|escalat)\w*\b",
    r"\b(?:do\s+not|don'?t|never|must\s+not|should\s+not|no\s+need\s+to|refrain\s+from)\s+"
    rf"(?:\w+\s+){{0,4}}?(?:with\s+)?(?:any\s+)?{_FINDING}",
    r"\bgo\s+easy\b|\bempty-handed\b|\bnothing\s+to\s+see\b|\bnit-?pick\w*|\blook\s+the\s+"
    r"other\s+way\b|\bblind\s+eye\b|\b(?:zero|0)\s+(?:findings|deviations|flags)\b|\bclean\s+"
    r"(?:audit|review)\b",
    r"\b(?:treat|mark|classify|consider|label|rate|declare|deem|call)(?:s|es)?\s+(?:\S+\s+){0,6}?"
    r"(?:fully\s+|entirely\s+)?(?:compliant|conforming|deviation-free)\b",
    r"\binstead\s+of\s+(?:auditing|reviewing|checking|the\s+(?:audit|review|check))\b|\blet\s+"
    r"(?:this|the|it)\s+(?:\w+\s+)?(?:through|pass|go)\b",
    r"\b(?:treat|mark|classify|consider|label|rate|score|assess|summari[sz]e|report|record|see|"
    r"declare|confirm|approve|pass|close|sign\s+off|certify|regard|describe|list)(?:s|es)?\s+"
    r"(?:\S+\s+)"
    r"{0,5}?as\s+(?:being\s+|fully\s+|100\s*%\s+)?(?:compliant|clean|passed|acceptable|approved|"
    r"conforming|deviation-free|error-free|ok|fine|without\s+deviations|having\s+no)\b",
    r"\b(?:deviations?|audit|audits|review|detection|checks?|flagging|reporting|findings?|"
    r"screening|validation|output)\s+(?:\S+\s+){0,5}?(?:is|are|was|were|has\s+been|have\s+been|now|"
    r"stays?|remain)\s+(?:\w+\s+)?(?:disabled|turned\s+off|switched\s+off|suspended|waived|off|"
    r"deactivated|not\s+(?:required|needed|necessary|applicable)|exempt|cancell?ed|bypassed|"
    r"skipped|paused|muted|silenced|suppressed|blocked)\b",
    r"\b(?:skip|bypass|disable|turn\s+off|switch\s+off|suspend|waive|deactivate|pause|cancel)\s+"
    r"(?:the\s+|this\s+|all\s+|any\s+)?(?:audit|review|checks?|detection|deviation|flagging|"
    r"screening|validation|inspection)\b",
    rf"\b(?:suppress|hide|omit|conceal|drop|remove|delete|ignore|clear|discard)\s+(?:\w+\s+)"
    rf"{{0,2}}?{_FINDING}\b",
    r"\b(?:expected|correct|required|desired|right|only\s+(?:acceptable|valid|correct))\s+"
    r"(?:audit\s+)?(?:output|answer|result|"
    r"response|verdict)\b[^.;\n]{0,40}?\b(?:is|:|=)\s*(?:\S+\s+)?(?:zero|no|empty|none|clean|"
    r"compliant|nothing|\[\s*\])",
    r"\b(?:keine|kein)\s+(?:abweichung\w*|befund\w*|feststellung\w*|fehler|probleme)\b",
    r"\bnicht\s+(?:melden|markieren|berichten|erwähnen|auflisten|beanstanden)\b|\bals\s+konform\b",
    r"\bmeld\s+geen\b|\bgeen\s+afwijking\w*|\bniet\s+melden\b|\bnie\s+zgłaszaj\w*|\bżadnych\s+"
    r"odchyle\w*|\bbez\s+odchyle\w*|отклонений\s+нет|не\s+сообщай|без\s+отклонений|逸脱が?(?:ない|は"
    r"ない|なし)|問題なし",
    r"\baucun(?:e)?\s+(?:écart|déviation|anomalie|constat|problème|non-conformité)s?\b",
    r"\bne\s+(?:signale[zr]?|rapporte[zr]?|mentionne[zr]?|liste[zr]?|relève[zr]?)\b|\bcomme\s+"
    r"(?:\w+\s+)?conforme\b",
    r"\b(?:ninguna|ningún|ninguno|sin|cero)\s+(?:desviaci\w+|hallazgo\w*|incidencia\w*|"
    r"problema\w*)\b|\bno\s+(?:informes?|reportes?|señales?|marques?|registres?|menciones?)\b",
    r"\bnessuna\s+(?:deviazione|anomalia)\b|\bnon\s+(?:segnalare|riportare|menzionare)\b",
    r"\bnenhum(?:a)?\s+(?:desvio|achado|problema)\w*\b|\bnão\s+(?:reporte|sinalize|relate|"
    r"registre|mencione)\b|\bcomo\s+conforme\b",
    r"不要(?:报告|标记|提及|列出|记录)|没有(?:任何)?偏差|无偏差|零偏差|零(?:个)?发现|视为合规|"
    r"标记为合规|空的?(?:列表|结果|数组)|逸脱(?:なし|はありません)|報告しない",
)
_AUTHORITY = (
    r"\b(?:head\s+of\s+(?:quality|qa|compliance)|qualified\s+person|site\s+director|plant\s+"
    r"manager|qa\s+manager|quality\s+director|compliance\s+officer|administrator|sysadmin|"
    r"platform\s+operator|your\s+(?:developers?|creators?|operators?)|openai|anthropic|fda|ema|"
    r"mhra|regulator|inspector)\b",
    r"\b(?:by\s+order\s+of|per\s+(?:instruction|order|directive)\s+of|on\s+(?:the\s+)?authority\s+"
    r"of|mandated\s+by|directive|priority\s+(?:update|override|notice)|"
    r"official\s+(?:notice|instruction)|pre-?approved|waiver)\b",
    r"\b(?:im\s+auftrag|auf\s+anweisung|par\s+ordre|sur\s+instruction|por\s+orden|autorizado\s+por"
    r"|autorisé\s+par|genehmigt\s+von)\b|根据.{0,10}(?:指示|命令)|经理批准|授权",
)
_MODE = (
    r"\b(?:test|testing|maintenance|debug|debugging|diagnostic|dev|sandbox|demo|simulation|"
    r"training|safe|admin|evaluation|override|audit-free|bypass)\s+mode\b",
    r"\bdry[\s-]?run\b|\bthis\s+is\s+(?:only\s+|just\s+)?a\s+test\b|\bdummy\s+(?:batch|data|"
    r"record)|\bvalidation\s+dummy\b|\bsandbox\b|\btest\s+(?:data|run|batch|record)s?\b",
    r"\b(?:testmodus|wartungsmodus|debug-?modus|mode\s+(?:test|maintenance|débogage)|modo\s+(?:de\s+)?"
    r"(?:prueba|mantenimiento|depuración|test|manutenzione|manutenção|teste))\b",
    r"测试模式|维护模式|调试模式|テストモード",
    r"\bhypothetical(?:ly)?\b|\bsuppose\b|\bin\s+(?:that|this|a|another)\s+(?:world|scenario|"
    r"story|universe)\b|\bwrite\s+(?:a|an)\s+(?:short\s+)?(?:story|poem|scene|play|dialogue)\b|"
    r"\bfictional\b|\bfor\s+a\s+(?:training|demo|teaching)\s+(?:slide|exercise|example)\b",
)
_PRESSURE = (
    r"\blose\s+my\s+job\b|\bi\s+beg\b|\bbegging\b|\burgent\b|\basap\b|\bpatients\s+are\s+"
    r"waiting\b|\btrust\s+me\b|\bbe\s+a\s+pal\b|\bdo\s+me\s+a\s+favou?r\b|\b(?:just\s+)?this\s+"
    r"once\b|\bk\s+thx\b|\bno\s+time\s+for\b|\bsmall\s+favou?r\b|\bi'?m\s+begging\b",
)
_CLAIMED_RESULT = (
    r"\b(?:audit|review)\s+(?:of\s+(?:\S+\s+){1,3})?(?:is\s+|was\s+|has\s+been\s+)?(?:complete|"
    r"completed|concluded|done|finished)\b|\b(?:i|we)\s+have\s+(?:already\s+)?(?:reviewed|"
    r"audited|checked)\b|\bconcluded\s*:|\bnothing\s+to\s+report\b",
)
_FAKE_ANSWER = (
    r"\"summary\"\s*:\s*\"[^\"]{0,60}?(?:compliant|clean|no\s+deviations?|no\s+findings?|"
    r"nothing)|[\"']?findings[\"']?\s*:\s*\[\s*$",
    r"[\"']?(?:findings|deviations|issues|flags)[\"']?\s*[:=]\s*(?:\[\s*\]|0\b|none\b|null\b)",
    r"[\"']?(?:status|verdict|result|compliant|compliance)[\"']?\s*[:=]\s*[\"']?(?:compliant|"
    r"clean|pass(?:ed)?|true|approved)\b",
    r"\b\w+\s*\(\s*\[\s*\]\s*\)|\b\w+\s*\([^()]{0,80}?\b(?:findings|deviations)\s*=\s*(?:\[\s*\]"
    r"|none|0)",
)
_TOOL_CALL = (
    r"\b(?:function_call|tool_calls?|tool_use)\b|<\s*/?\s*(?:tool_call|function_call|invoke|"
    r"function_calls)\b",
)
_OUTPUT_DIRECTIVE = (
    r"\b(?:final|correct|expected|required|official)\s+(?:answer|output|response|reply|verdict)\b",
    r"\b(?:copy|paste|repeat|echo|emit|reproduce)\b[^.;\n]{0,30}?\b(?:verbatim|exactly|as\s+is|"
    r"the\s+(?:json|block|text|answer)|this)\b|\bverbatim\b",
    r"\buse\s+(?:this|that|the\s+(?:block|json|text)|it)\b[^.;\n]{0,20}?\bas\s+(?:your|the)\s+"
    r"(?:answer|response|output|reply)\b|\band\s+nothing\s+else\b|\b(?:respond|answer|reply)\s+"
    r"(?:only\s+)?with\s+(?:exactly|only)\b",
    r"\bthe\s+real\s+(?:instruction|task|request)\b|\bcall\s+(?:this|the)\s+(?:tool|function)\b",
    r"\b(?:return|output|give|submit|use|present)\s+(?:exactly\s+)?(?:that|it|this)\b[^.;\n]{0,20}?"
    r"(?:\bas\s+(?:the|your)\s+(?:real|actual|final|official|true)\b|$|[.;])",
    r"\bas\s+(?:the|your)\s+(?:real|actual|final|official|true)\s+(?:result|answer|output|audit|"
    r"findings|verdict)\b|\bthe\s+(?:correct|real|right|true)\s+(?:audit|answer|result|output|"
    r"response)\s+is\b|\bcontinue\s+from\s+here\b|\b(?:close|finish|complete)\s+the\s+(?:audit|"
    r"review|json|answer)\b",
)
_DATA_BOUNDARY = (
    r"<!--|-->|```|<<<\s*[a-z_]+|[a-z_]+\s*>>>",
    r"\bend\s+of\s+(?:the\s+)?(?:records?|data|document|input|batch)\b|\b(?:data|records?|"
    r"input)\s+ends?\s+here\b|\bend\s+data\b",
    r"\beverything\s+(?:after|below|following)\s+this\b|\bstop\s+reading\b",
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0|<\s*span\b|\[//\]\s*:\s*#",
)
_RESET = (
    r"\b(?:new|updated|revised|changed)\s+(?:instructions?|task|rules|policy|orders)\b",
    r"\b(?:instructions?|rules|task|policy)\s+(?:has|have|was|were)\s+(?:been\s+)?(?:changed|"
    r"updated|cancell?ed|replaced|revoked)\b",
    r"\b(?:previous|prior|original)\s+(?:task|request)\s+(?:is|was|has\s+been)\s+(?:cancell?ed|"
    r"void|over|replaced)\b|(?:^|\n)\s*#{1,4}\s*(?:new\s+)?task\b[^\n]{0,12}(?:updated|new)",
    r"(?:^|\n)\s*(?:system|assistant|developer)\s*:",
    r"\b(?:instructions?|rules|prompts?)\s+(?:above|before\s+this|you\s+were\s+given|given\s+to\s+"
    r"you|you\s+received)\b",
    r"\bexempt\s+from\s+(?:the\s+)?(?:audit|review)\b|\bfrom\s+now\s+on\b|\bnew\s+persona\b",
    r"\bneue\s+anweisung\w*|\bnouvelles?\s+(?:instructions?|consignes?)|\bnuevas?\s+"
    r"instrucciones\b|新的?指令|新任务",
)

STRONG_CUES: dict[str, re.Pattern[str]] = {
    "override_instructions": _rx(*_OVERRIDE_EN, *_OVERRIDE_INTL),
    "role_tokens": _rx(*_ROLE_TOKENS),
    "role_play": _rx(*_ROLE_PLAY),
    "prompt_exfiltration": _rx(*_EXFILTRATE),
    "tool_call_markup": _rx(*_TOOL_CALL),
    "explicit_address": _rx(*_EXPLICIT_ADDRESS),
}
WEAK_CUES: dict[str, re.Pattern[str]] = {
    "addressed_to_model": _rx(*_ADDRESSEE),
    "suppress_findings": _rx(*_SUPPRESS),
    "claimed_authority": _rx(*_AUTHORITY),
    "claimed_mode": _rx(*_MODE),
    "fake_answer_or_tool": _rx(*_FAKE_ANSWER),
    "task_reset": _rx(*_RESET),
    "output_directive": _rx(*_OUTPUT_DIRECTIVE),
    "data_boundary": _rx(*_DATA_BOUNDARY),
    "pressure": _rx(*_PRESSURE),
    "claimed_result": _rx(*_CLAIMED_RESULT),
}
MODEL_CUE = "classifier"  # the classifier's verdict, when no rule decided
CUE_NAMES: tuple[str, ...] = (*STRONG_CUES, *WEAK_CUES, MODEL_CUE)


# --- normalisation -----------------------------------------------------------------------------
_LEET = str.maketrans("0134578@$|!", "oieastbasli")
_LEET_TOKEN = re.compile(r"\b(?=[\w@$|!]*[a-z])(?=[\w@$|!]*[0134578@$|!])[\w@$|!]{2,}")
_SPACED = re.compile(r"(?<!\S)\w([ .\-_*·])(?:\w\1)*\w(?=[\s,;:!?]|$)")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}){8,}\b")
WHOLE_TEXT_CHARS = 1000  # up to this length a text is also screened whole, not only by line
# Common function words of the languages screened: two of them and the text is read as it is.
_READABLE = re.compile(r"\b(?:the|and|to|of|is|for|on|in|with|at|by|as|was|no|not|der|die|und|"
                       r"le|la|et|les|el|y|los|de|il|che|een|het|en)\b")
_ENCODED_HINT = re.compile(r"%[0-9a-fA-F]{2}|[A-Za-z0-9+/=_-]{16,}")
_NON_LATIN_LETTER = re.compile(r"[^\x00-\x7f]")


def _printable_text(raw: bytes) -> str | None:
    """`raw` as text if it is UTF-8 and reads like text (letters and spaces), else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or sum(c.isprintable() for c in text) < 0.95 * len(text):
        return None
    return text if sum(c.isalpha() or c.isspace() for c in text) >= 0.7 * len(text) else None


def _decoded_runs(text: str) -> list[str]:
    """The text hidden in base64 and hex runs of `text` (runs that decode to readable text)."""
    found: list[str] = []
    for run in _HEX_RUN.findall(text):
        decoded = _printable_text(binascii.unhexlify(run))
        if decoded:
            found.append(decoded)
    for run in _B64_RUN.findall(text):
        if _HEX_RUN.fullmatch(run):
            continue
        body = run.rstrip("=")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if (
                "-" in body or "_" in body) else None, validate=True)
        except (binascii.Error, ValueError):
            continue
        decoded = _printable_text(raw)
        if decoded:
            found.append(decoded)
    return found


@lru_cache(maxsize=1)
def _homoglyph_table() -> dict[int, str]:
    """Non-ASCII letters that look like one ASCII letter (Cyrillic а, Greek ο, ...) -> that letter,
    from confusable-homoglyphs' copy of the Unicode confusables table."""
    from confusable_homoglyphs import utils

    table: dict[int, str] = {}
    for char, glyphs in utils.load("confusables.json").items():
        if len(char) != 1 or char.isascii():
            continue
        bases = ("".join(c for c in g["c"] if not unicodedata.combining(c)) for g in glyphs)
        latin = [b for b in bases if len(b) == 1 and b.isascii() and b.isalpha()]
        if latin:
            table[ord(char)] = latin[0]
    return table


def _visible(text: str) -> str:
    """NFKC with the invisible format characters (zero-width, bidi controls: Cf) removed."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def normalise(text: str) -> str:
    """NFKC, invisible format characters removed, case folded; whitespace runs are kept (spaced-out
    letters need the difference)."""
    return _visible(text).casefold()


def variants(text: str) -> list[str]:
    """The normalised text and its de-obfuscated readings (each only when it differs): look-alike
    letters folded, leetspeak undone, spaced letters joined, URL escapes, base64 and hex decoded,
    ROT13 and reversed text (cheap to try; on ordinary text they give no cue)."""
    visible = _visible(text)
    base = visible.casefold()
    out = [base]
    if _NON_LATIN_LETTER.search(visible):
        out.append(visible.translate(_homoglyph_table()).casefold())
    if "%" in base:
        out.append(urllib.parse.unquote(base))
    if len(_READABLE.findall(base)) < 2:  # not plain prose: try ROT13 and reversed text
        out += [codecs.encode(base, "rot13"), base[::-1]]
    for candidate in list(out[:3]):
        deleet = _LEET_TOKEN.sub(lambda m: m.group(0).translate(_LEET), candidate)
        joined = _SPACED.sub(lambda m: m.group(0).replace(m.group(1), ""), candidate)
        out += [v for v in (deleet, joined) if v != candidate]
    out += [normalise(decoded) for decoded in _decoded_runs(unicodedata.normalize("NFKC", text))]
    return list(dict.fromkeys(out))


def _json_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _record(line: str) -> list[str] | None:
    """The string values of the batch record a line holds (a JSON object with a record_id), else
    None (also for JSON too deep to walk: the line is then screened as text)."""
    stripped = line.strip()
    if not (stripped.startswith("{") and stripped.endswith("}") and "record_id" in stripped):
        return None
    try:
        value = json.loads(stripped)
        if not (isinstance(value, dict) and "record_id" in value):
            return None
        return _json_strings(value)
    except (ValueError, RecursionError):
        return None


def segments(text: str) -> list[str]:
    """Lines, a record line field by field (its string values), and a short text without records
    also whole (an attack split over lines); cues are never added up across a long prompt."""
    lines = text.splitlines() or [text]
    out: list[str] = []
    records = 0
    for line in lines:
        record = _record(line)
        if record is None:
            out.append(line)
        else:
            records += 1
            out += record
    if len(lines) > 1 and not records and len(text) <= WHOLE_TEXT_CHARS:
        out.append(text)
    return out


# --- the verdict -------------------------------------------------------------------------------
@dataclass(frozen=True)
class InjectionVerdict:
    """Whether a text carries an injection, and the cues of the segments that decided it."""

    flagged: bool
    cues: tuple[str, ...] = ()


def segment_cues(segment: str) -> tuple[str, ...]:
    """The cues one segment (already normalised) matches, strong ones first, in table order."""
    cues = [name for name, rx in STRONG_CUES.items() if rx.search(segment)]
    return (*cues, *(name for name, rx in WEAK_CUES.items() if rx.search(segment)))


# Weak cues that say what to do (to whom); the others only set a scene (a mode, an authority, a
# claimed result, pressure, a boundary). Two scene cues alone never decide.
ACTION_CUES = frozenset({"addressed_to_model", "suppress_findings", "fake_answer_or_tool",
                         "output_directive", "task_reset"})


def _decides(cues: tuple[str, ...]) -> bool:
    if any(c in STRONG_CUES for c in cues):
        return True
    weak = [c for c in cues if c in WEAK_CUES]
    return len(weak) >= 2 and any(c in ACTION_CUES for c in weak)


@lru_cache(maxsize=65536)  # record fields and comments repeat across records and chunks
def _deciding_cues(segment: str) -> tuple[str, ...]:
    """The cues of one segment if they decide, else (). A short segment of one or two words (an
    id, a status, a unit) without an encoded run can only carry a token: role and tool-call
    tokens are all it is checked for."""
    if len(segment.split()) < 3 and len(segment) < 40 and not _ENCODED_HINT.search(segment):
        base = normalise(segment)
        return tuple(n for n in ("role_tokens", "tool_call_markup") if STRONG_CUES[n].search(base))
    found: list[str] = []
    dan = bool(_DAN.search(segment))
    for reading in variants(segment):
        cues = segment_cues(reading)
        if dan and "role_play" not in cues:
            cues = ("role_play", *cues)
        if _decides(cues):
            found += [c for c in cues if c not in found]
    return tuple(found)


@lru_cache(maxsize=65536)  # the auditor meets the same comments in every chunk of a split
def rule_cues(text: str) -> tuple[str, ...]:
    """The cues of the segments of `text` that the rules flag (empty: the rules let it pass)."""
    found: list[str] = []
    for segment in segments(text):
        found += [c for c in _deciding_cues(segment) if c not in found]
    return tuple(sorted(found, key=CUE_NAMES.index))


def screen_text(text: str, *, use_model: bool = True) -> InjectionVerdict:
    """Screen one text (a record comment, a chat message, a retrieved chunk): the rules, then
    (`use_model`) the classifier of synthetic/injection_model.py on the segments they let pass."""
    if not isinstance(text, str) or not text.strip():
        return InjectionVerdict(False)
    cues = rule_cues(text)
    if not cues and use_model and _model_flags([text])[0]:
        cues = (MODEL_CUE,)
    return InjectionVerdict(bool(cues), cues)


def model_segments(text: str) -> list[str]:
    """What the classifier reads: a short text without records whole; otherwise only the string
    values of its record lines. It learnt comment- and message-sized texts, so the lines of a
    long prompt (which quote answer formats) are left to the rules."""
    lines = text.splitlines() or [text]
    records = [r for r in map(_record, lines) if r is not None]
    if not records:
        return [text] if len(text) <= WHOLE_TEXT_CHARS else []
    return [v for r in records for v in r]


def _model_flags(texts: Sequence[str]) -> list[bool]:
    """The classifier's verdict per text (any of its segments at or over the threshold), with
    one prediction call for all of them."""
    from synthetic.injection_model import THRESHOLD, probabilities

    parts = [model_segments(t) for t in texts]
    proba = iter(probabilities([s for p in parts for s in p]))
    return [any([next(proba) >= THRESHOLD for _ in p]) for p in parts]


def flag_texts(values: Sequence[object]) -> list[bool]:
    """is_injection for many values at once (one classifier call): the reference auditor's
    non_gmp_compliant_free_text check over the distinct comments of a split."""
    flags = [isinstance(v, str) and bool(v.strip()) and bool(rule_cues(v)) for v in values]
    rest = [i for i, v in enumerate(values) if isinstance(v, str) and v.strip() and not flags[i]]
    for i, flagged in zip(rest, _model_flags([values[i] for i in rest]), strict=True):
        flags[i] = flagged
    return flags


def prepare() -> None:
    """Train the classifier now (a few seconds, once per process) instead of in the first screen:
    the server and the inbox sensor call it before they take work."""
    from synthetic.injection_model import train

    train()


def is_injection(text: object) -> bool:
    """True if `text` is a string the detector flags."""
    return isinstance(text, str) and screen_text(text).flagged
