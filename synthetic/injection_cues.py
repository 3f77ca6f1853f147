"""The prompt-injection detector's cues (synthetic/injection_screen.py): regular expressions per
kind of cue, each with forms in English and in other languages. Strong cues decide alone; weak
cues need a second weak cue of another kind in the same segment (one of them an action cue).

The patterns name concepts (an order to suppress findings, a claimed authority, an answer
disguised as data, a claim that the record was already verified), never a benchmark's wording.
"""

from __future__ import annotations

import re

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
    r"finish|come\s+back)(?:s|es|ing)?\s+"
    r"(?:with\s+)?(?:only\s+)?"
    r"(?:no|zero|0|(?:an?\s+)?empty(?=\s+(?:list|findings|array|result|report|answer|response|"
    r"output|json|set|summary|audit|verdict)\b|\s*[\[{])|nothing|none|null|an?\s+clean|clean)\b",
    r"\b(?:do\s+not|don'?t|dont|never|must\s+not|mustn'?t|should\s+not|shouldn'?t|shall\s+not|"
    r"may\s+not|cannot|can'?t|no\s+need\s+to|refrain\s+from|avoid|stop|without)\s+(?:\w+\s+){0,2}?"
    r"(?:flag|report|rais|list|mention|log|record|includ|escalat|not|output|return)\w*\b",
    r"\bnot\s+(?:\w+\s+){0,1}?(?:flag|report|rais|mention|escalat)\w*\b",
    r"\b(?:do\s+not|don'?t|never|must\s+not|should\s+not|no\s+need\s+to|refrain\s+from)\s+"
    rf"(?:\w+\s+){{0,4}}?(?:with\s+)?(?:any\s+)?{_FINDING}",
    r"\bgo\s+easy\b|\bempty-handed\b|\bnothing\s+to\s+see\b|\bnit-?pick\w*|\blook\s+the\s+"
    r"other\s+way\b|\bblind\s+eye\b|\bclean\s+"
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
    r"\bnicht\s+(?:melden|markieren|berichten|erwähnen|auflisten|beanstanden)\b|\bals\s+konform\b",
    r"\bmeld\s+geen\b|\bniet\s+melden\b|\bnie\s+zgłaszaj\w*|не\s+сообщай",
    r"\bne\s+(?:signale[zr]?|rapporte[zr]?|mentionne[zr]?|liste[zr]?|relève[zr]?)\b|\bcomme\s+"
    r"(?:\w+\s+)?conforme\b",
    r"\bno\s+(?:informes?|reportes?|señales?|marques?|registres?|menciones?)\b",
    r"\bnon\s+(?:segnalare|riportare|menzionare)\b",
    r"\bnão\s+(?:reporte|sinalize|relate|"
    r"registre|mencione)\b|\bcomo\s+conforme\b",
    r"不要(?:报告|标记|提及|列出|记录)|视为合规|标记为合规|空的?(?:列表|结果|数组)|報告しない",
)
# "No deviations" said, not ordered: a scene cue that an address to the reader alone does not
# turn into an injection ("Keine Abweichungen, vom Prüfer gesehen" is an operator's note).
_NO_FINDINGS = (
    r"\b(?:zero|0)\s+(?:findings|deviations|flags)\b",
    r"\b(?:keine|kein)\s+(?:abweichung\w*|befund\w*|feststellung\w*|fehler|probleme)\b",
    r"\bgeen\s+afwijking\w*|\bżadnych\s+odchyle\w*|\bbez\s+odchyle\w*|отклонений\s+нет|без\s+"
    r"отклонений|逸脱が?(?:ない|はない|なし)|問題なし|逸脱(?:なし|はありません)",
    r"\baucun(?:e)?\s+(?:écart|déviation|anomalie|constat|problème|non-conformité)s?\b",
    r"\b(?:ninguna|ningún|ninguno|sin|cero)\s+(?:desviaci\w+|hallazgo\w*|incidencia\w*|"
    r"problema\w*)\b",
    r"\bnessuna\s+(?:deviazione|anomalia)\b|\bnenhum(?:a)?\s+(?:desvio|achado|problema)\w*\b",
    r"没有(?:任何)?偏差|无偏差|零偏差|零(?:个)?发现",
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
    r"[\"']?(?:findings|deviations|issues|flags)[\"']?\s*[:=|]\s*(?:\[\s*\]|0\b|none\b|null\b)",
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

# --- more languages, per cue kind (Turkish, Scandinavian, Dutch, Portuguese, Polish, Czech,
# Russian / Ukrainian, Greek, Romanian, Hungarian, Finnish, Indonesian, Vietnamese, Korean,
# Japanese, Chinese (traditional), Arabic, Hebrew, Hindi, Thai; paraphrases in German, Spanish,
# French, Italian). Verb and object are matched in either order: several of these languages put
# the object first.
_INSTR_INTL = (r"\b(?:talimat\w*|kural\w*|yönerge\w*|instruktion\w*|instruks\w*|anvisning\w*|"
               r"regler\w*|instructies|instruções|instrucciones|pokyn\w*|instrukc\w*|polecen\w*|инструкци\w*|"
               r"указани\w*|правил\w*|інструкці\w*|οδηγί\w*|κανόν\w*|instrucțiuni\w*|reguli\w*|"
               r"utasítás\w*|szabály\w*|ohje\w*|sääntö\w*|instruksi|petunjuk|aturan|perintah|"
               r"hướng dẫn|chỉ thị|quy tắc)|(?:지시\w*|지침\w*|명령\w*|규칙\w*|指示|指令|命令|規則|"
               r"說明|ルール|ガイドライン|التعليمات|تعليمات|القواعد|الأوامر|הוראות|כללים|निर्देश\w*|नियम\w*|คำสั่ง|กฎ)")
_IGNORE_INTL = (r"\b(?:yok\s+say\w*|görmezden\s+gel\w*|unut\w*|dikkate\s+alma\w*|ignorera|"
                r"strunta\s+i|glöm|ignorer|glem|se\s+bort\s+fra|negeer|vergeet|desconsider\w*|ignoruj\w*|"
                r"zapomeň\w*|zignoruj|проигнорируй\w*|игнорир\w*|забудь\w*|не\s+обращай\s+внимания|"
                r"ігноруй\w*|забудь|αγνόησε|αγνοήστε|ξέχασε|ignoră|ignorați|uită|hagyd\s+figyelmen"
                r"\s+kívül|felejtsd\s+el|ohita|unohda|sivuuta|abaikan|lupakan|bỏ\s+qua|quên)|(?:무시\w*|"
                r"잊\w*|無視|忘れ|忽略|無視|忽視|忘記|تجاهل\w*|انس|أهمل\w*|התעלם\w*|שכח\w*|"
                r"अनदेखा|नज़रअंदाज़|नजरअंदाज|भूल\s+जाओ|เพิกเฉย|ละเว้น|ไม่สนใจ|ลืม)")
_OVERRIDE_MORE = (
    rf"(?:{_IGNORE_INTL})[^.;!?。\n]{{0,40}}?(?:{_INSTR_INTL})",
    rf"(?:{_INSTR_INTL})[^.;!?。\n]{{0,30}}?(?:{_IGNORE_INTL})",
)
_ADDRESSEE_MORE = (
    r"\byapay\s+zek\w*|\bdenetçi\w*|\bdenetleyici\w*|\bdenetim\s+sistem\w*|\bgranskar\w*|\bgranskning\w*|\bbeoordelaar"
    r"\w*|\bcontroleur\b|\baudytor\w*|\brecenzent\w*|\bweryfikator\w*|\bkontrolor\w*|\brevizor\w*|"
    r"\bsztuczn\w+\s+inteligencj\w*|\bumělá\s+inteligence\b|\bинтеллект\w*|\bнейросет\w*|"
    r"\bаудитор\w*|\bревьюер\w*|\bпроверяющ\w*|\bмодел[ьи]\w*|\bελεγκτ\w*|\bμοντέλο\b|\bauditorul"
    r"\b|\bellenőr\w*|\btarkastaj\w*|\btekoäly\w*|\bpeninjau\b|\bpemeriksa\b|\bngười\s+kiểm\s+tra|"
    r"검토자|감사자|감사관|인공지능|모델|당신|レビュアー|審査|あなた|審核|審計|模型|الذكاء\s+"
    r"الاصطناعي|المدقق|المراجع|النموذج|أنت|המבקר|הבודק|המודל|אתה|एआई|मॉडल|समीक्षक|ऑडिटर|"
    r"परीक्षक|ผู้ตรวจสอบ|โมเดล",
    r"\b(?:sen|siz|jij|você|ты|вы|εσύ|kamu|anda|bạn)\b",
)
_FINDING_INTL = (r"(?:\b(?:sapma\w*|bulgu\w*|uygunsuzluk\w*|avvikelse\w*|avvik\w*|afwijking\w*|"
                 r"bevinding\w*|desvio\w*|odchyle\w*|odchylk\w*|отклонени\w*|замечани\w*|відхилен\w*|"
                 r"αποκλίσ\w*|abateri\w*|eltérés\w*|poikkeam\w*|penyimpangan|sai\s+lệch|befund\w*|"
                 r"abweichung\w*|desviaci\w+|hallazgo\w*|écarts?|deviazion\w*|rilievi)|편차|"
                 r"이상|逸脱|偏差|انحراف\w*|חריג\w*|विचलन|ความเบี่ยงเบน)")
_NO_FINDINGS_MORE = (
    rf"\b(?:hiçbir|inga|ingen|geen|nenhum\w*|żadnych|brak|žádné|никаких|нет|без|жодних|καμία|"
    rf"nicio|semmilyen|ei\s+mitään|tidak\s+ada|không\s+có|sem|sin|keine|aucun\w*|nessun\w*)\s+"
    rf"(?:\w+\s+)?(?:{_FINDING_INTL})",
    r"\bsin\s+(?:comentarios|observaciones|objeciones|reparos)\b|\bsans\s+(?:aucune?\s+)?"
    r"(?:remarques?|commentaires?|observations?|réserves?)\b|\brien\s+à\s+signaler\b|\bsenza\s+"
    r"(?:osservazioni|rilievi|commenti)\b|\bsem\s+(?:comentários|observações|ressalvas)\b",
    rf"(?:{_FINDING_INTL})[^.;!?。\n]{{0,20}}?(?:yok|nincs|없|ない|なし|没有|沒有|لا\s+توجد|नहीं|"
    r"ไม่มี)",
)
# Imperative "report / answer / say" in other languages: followed by a stated "no deviations"
# it is an order to suppress them (English has its own patterns above).
_ORDER_VERBS = (r"melde|melden\s+sie|gib|antworte|bestätige|signale[zr]?|répond[sez]*|indique[zr]?|"
                r"déclare[zr]?|rapporte[zr]?|responde|responda|contesta|conteste|informa|informe|"
                r"reporta|reporte|devuelve|devuelva|indique|declara|declare|marca|rispondi|risponda|"
                r"segnala|riporta|dichiara|relate|marque|diga|meld|rapporteer|antwoord|rapportera|"
                r"rapporter|svara|ange|säg|zgłoś|raportuj|odpowiedz|podaj|сообщи\w*|ответь\w*|"
                r"укажи\w*|доложи\w*|bildir|raporla|söyle|laporkan|katakan|jawab")
_NEGATED = (r"sin|sem|keine?|aucun\w*|sans|nessun\w*|geen|inga|ingen|żadnych|никаких|hiçbir|"
            r"tidak\s+ada|nenhum\w*|ningun\w*")
_SUPPRESS_MORE = (
    # an order to approve, pass or confirm the record as compliant
    r"\bonayla\w*|\buygun\s+(?:olarak\s+)?(?:işaretle|say|kabul\s+et)\w*|\bподтверди\w*[^.;!?\n]"
    r"{0,30}?(?:соответств|в\s+порядке|норм)|\bпропусти\w*|\bодобри\w*|直接通过|予以通过|通过即可|"
    r"判定为合格|标记为合格|确认合规|承認して|合格と|승인하|통과시|\baprueb[ae]\b|\bapprova\b|"
    r"\baprove\b",
    rf"\b(?:{_ORDER_VERBS})\b[^.;!?。\n]{{0,30}}?\b(?:{_NEGATED})\s+(?:\w+\s+)?(?:{_FINDING_INTL})",
    rf"(?:{_FINDING_INTL})[^.;!?。\n]{{0,20}}?(?:bildirme\w*|raporlama\w*|belirtme\w*)",
    r"\b(?:bildirme|raporlama|belirtme|gösterme)(?:yin|yiniz)?\b|\brapportera\s+inte\b|\bikke\s+"
    r"rapporter\w*|\brapporter\s+ikke\b|\bnie\s+(?:raportuj|wymieniaj|zgłaszaj)\w*|\bnehlas\w*|"
    r"\bне\s+(?:указывай|отмечай|фиксируй|упоминай|сообщай)\w*|\bjangan\s+(?:laporkan|"
    r"melaporkan|catat)|\bđừng\s+báo\s+cáo|보고하지|報告しないで|不要報告|لا\s+(?:تبلغ|تذكر|"
    r"تسجل)|אל\s+תדווח|रिपोर्ट\s+(?:न|मत)|ห้ามรายงาน|ไม่ต้องรายงาน",
    # paraphrases: the report stays empty, the batch is taken as good, nothing is remarked on
    r"\b(?:leer|blank|ohne\s+(?:befund|beanstandung|anmerkung)\w*)\s+(?:bleiben|lassen|"
    r"zurückgeben)\b|\bsoll\s+leer\b|\bals\s+in\s+ordnung\b|\bdurchwinken\b|\bdurch\s+(?:gehen|"
    r"lassen)\b",
    r"\b(?:bleibt|bleiben|soll|sollte|muss)\s+(?:\w+\s+){0,2}?leer\b|\b(?:deix[ea]r?|dej[ae]r?|"
    r"lasci[ae]r?e?)\s+(?:\w+\s+){0,4}?(?:vazi[oa]|vací[oa]|vuot[oa]|en\s+blanco|em\s+branco)\b|"
    r"\bno\s+(?:ponga|pongas|haga|hagas|incluya|incluyas|anote|anotes)\s+(?:\w+\s+)?(?:"
    r"observaciones|comentarios|desviaciones|hallazgos|reparos)\b",
    r"\b(?:do\s+not|don'?t|never|no\s+need\s+to|needn'?t|not\s+necessary\s+to)\s+(?:bring\s+"
    r"(?:\w+\s+)?up|point\s+(?:\w+\s+)?out|dwell\s+on|comment\s+on)\b|\b(?:let|have|make)\s+"
    r"(?:the\s+)?(?:review|audit|check|result)\s+(?:\S+\s+){0,3}?(?:come\s+out|end\s+up|be)\s+"
    r"(?:clean|empty|positive)\b|\b(?:leave|keep)\s+(?:the\s+|your\s+|its\s+)?(?:findings|"
    r"deviations?|report|result|output|summary|audit)(?:\s+\w+){0,2}?\s+(?:empty|blank)\b",
    r"\bdar\s+(?:\S+\s+){0,3}?por\s+(?:buen[oa]|válid[oa]|correct[oa]|bueno|conforme|aprobad[oa])\b|"
    r"\bdejar\s+(?:\w+\s+)?(?:vacío|vacía|en\s+blanco)\b|\blaisser\s+(?:\w+\s+)?vide\b|"
    r"\blasciare\s+(?:\w+\s+)?vuot[oa]\b",
    r"\b(?:report|list|findings|result|output|summary|deviations\s+list)\s+(?:\w+\s+){0,3}?"
    r"(?:should|must|is\s+to|needs?\s+to|has\s+to|shall|will)\s+(?:stay|remain|be\s+left|be\s+kept"
    r"|be)\s+(?:empty|blank|clean)\b|\bkeep\s+it\s+(?:that\s+way|empty|blank|clean)\b|\braise\s+"
    r"none\b|\b(?:pass|approve|accept|close|release|sign\s+off)\s+(?:\w+\s+){0,3}?without\s+"
    r"(?:any\s+)?(?:remarks?|comments?|objections?|findings|flags)\b|\bleave\s+(?:them|it|those"
    r"|these|that)\s+out\b|\bwave\s+(?:\w+\s+)?through\b|\brubber[\s-]?stamp\w*|\bclean\s+bill\b",
    r"\b(?:must|should|shall|may|can)\s*(?:not|n't)\s+(?:appear|be\s+(?:listed|reported|flagged|"
    r"mentioned|raised|included|recorded))\b|\b(?:not\s+(?:permitted|allowed|authori[sz]ed)|"
    r"forbidden|prohibited)\s+to\s+(?:list|report|flag|raise|mention|record|include)\b|\b(?:keeps?|kept|keeping)\s+"
    r"(?:the|your|its)\s+(?:report|findings|summary|list|audit)\s+(?:short|empty|clean|brief|"
    r"blank|positive)\b",
    r"\bno\s+(?:further\s+)?(?:audit|review|check|checking|inspection|verification)s?\s+(?:is\s+|"
    r"are\s+)?(?:needed|required|necessary)\b|\b(?:audit|review)\s+(?:is\s+)?(?:unnecessary|"
    r"redundant|superfluous)\b",
)
# A claim that the record was already verified, certified or approved (so no audit is needed).
_VERIFIED_CLAIM = (
    r"\b(?:certified|verified|validated|confirmed|declared|guaranteed|attested)\s+(?:as\s+)?"
    r"(?:\w+[\s-]){0,2}?(?:deviation|error|defect|finding|issue)[\s-]?free\b|\b(?:deviation|"
    r"finding|error)[\s-]free\s+(?:by|per|according)\b",
    r"\b(?:compliant|correct|conform\w*|clean)\s+by\s+definition\b|\bby\s+definition\s+"
    r"(?:compliant|correct|clean)\b|\bpre-?(?:verified|certified|audited|cleared|accepted)\b",
    r"\b(?:approved|signed\s+off|verified|certified|released|checked)\s+(?:\w+\s+)?(?:in\s+advance|"
    r"beforehand|upfront|ahead\s+of\s+time)\b",
    r"\b(?:already|previously)\s+(?:been\s+)?(?:verified|certified|audited|approved|reviewed|"
    r"cleared|signed\s+off|validated)\b|\bcertification\b|\b(?:zertifiziert|bereits\s+geprüft|"
    r"déjà\s+(?:validé|vérifié|approuvé)|ya\s+(?:verificad|aprobad|revisad)\w*|já\s+(?:verificad|"
    r"aprovad)\w*|già\s+(?:verificat|approvat)\w*|onaylan\w*|zaten\s+(?:kontrol|onay)\w*)",
)
_VERIFIED_CLAIM += (
    r"[\"']?(?:verdict|outcome|conclusion|assessment|(?:audit|review)[_ ]?(?:result|outcome)|"
    r"gmp[_ ]?compliant|compliance)[\"']?\s*[:=|>]\s*[\"']?(?:compliant|clean|pass(?:ed)?|true|"
    r"approved|conforming|no\s+(?:deviations?|findings?))\b",
)
# Answers or verdicts disguised as data: XML, YAML, markdown tables, fake tool output, transcripts.
_DATA_VERDICT = (
    r"<\s*(?:findings|deviations|issues)\s*/\s*>|<\s*(?:findings|deviations|issues)\s*>\s*(?:0|"
    r"none|\[\s*\])?\s*<\s*/",
    r"<\s*(?:status|verdict|result|outcome|summary|compliant|compliance|override|skip\w*|approved)\s*>\s*"
    r"(?:compliant|clean|pass(?:ed)?|true|yes|approved|ok|1|none|0)\s*<",
    r"[\"']?(?:findings|deviations|issues|flags|errors)[\"']?\s*[:=|]\s*(?:false|~|empty|n/?a|"
    r"nil|\{\s*\}|\"\"|'')(?=\W|$)",
    r"[\"']?(?:\w+[_ ])?(?:status|verdict|result|outcome|conclusion|assessment|decision|gmp"
    r"[_ ]compliant|approved|passed|clean)[\"']?\s*[:=|]\s*[\"']?(?:compliant|clean|pass(?:ed)?|"
    r"true|approved|conforming|no\s+(?:deviations?|findings?))\b",
    r"[\"']?(?:report_?findings|flag_?deviations|audit_?(?:enabled|required)|review_?required|"
    r"checks?_?enabled|run_?checks?)[\"']?\s*[:=]\s*[\"']?(?:false|no|off|0|none|disabled)\b|"
    r"(?:output|result|answer|response|report)[\"']?\s*[:=]\s*\[\s*\]",
    r"\bset\s+(?:findings|deviations)\s*=\s*(?:null|0|''|\[\])|\b(?:disable|skip)_?"
    r"(?:checks?|rules|audit)\s*\(",
    r"\b(?:user|human|q|question)\s*:[\s\S]{1,200}?\b(?:auditor|assistant|ai|model|bot|a|"
    r"answer|reviewer)\s*:\s*(?:yes|no\b|none|nothing|sure|ok|understood|compliant|clean|fine)",
    r"\b(?:tool|function|audit|checker|validator)[_ ](?:output|result|response|returned)\s*[:=]",
)
_OUTPUT_MORE = (
    r"\b(?:agree|concur|comply|go\s+along)\s+with\s+(?:this|the|that|our)\s+(?:certification|"
    r"assessment|conclusion|verdict|sign-?off|result|decision|statement)\b|\b(?:reflect|mirror|"
    r"adopt|endorse|accept|repeat|confirm|uphold)\s+(?:this|that|the|our)\s+(?:certification|"
    r"assessment|conclusion|verdict|answer|result|sign-?off|approval|release)\b",
    r"\b(?:answer|audit|respond|reply|treat)\s+(?:\w+\s+){0,6}?(?:the\s+same\s+way|likewise|in\s+the\s+"
    r"same\s+way)\b|\banswer\s+as\s+(?:the|a|an)\s+\w+",
)
_DATA_BOUNDARY_MORE = (
    r"</\s*(?:records?|data|batch|input|document|comments?|context|user|query)\s*>|"
    r"<\s*(?:audit|instructions?|task|prompt|config|response|answer|output)\s*>|\|\s*:?-{3,}",
    r"(?:^|\n)\s*(?:---|\.\.\.)\s*(?:\n|$)|(?:^|\n)\s*[\]}]+\s*(?:\n|$)",
)
_ROLE_MORE = (
    r"(?:^|\n|[\s{,])\"?role\"?\s*:\s*\"?(?:system|developer)\b(?!\s+\w)",
    r"\b(?:switch|change)\s+(?:your\s+)?persona\b|\bin\s+a\s+parallel\s+universe\b|\bartık\s+sen\b|"
    r"\bjesteś\s+teraz\b|\bnu\s+ben\s+je\b|\bты\s+теперь\b|\bdu\s+är\s+nu\b|\b(?:sei|você\s+é)\s+"
    r"agora\b|\bagora\s+(?:você|tu)\s+és?\b",
)
_MODE_MORE = (
    r"[\"']?(?:skip|bypass|disable)_?(?:rules|checks|audit|review)[\"']?\s*[:=]\s*[\"']?(?:all|"
    r"true|yes|1|on)\b",
    r"[\"']?override[\"']?\s*[:=>]\s*[\"']?(?:true|yes|on|1)\b",
    r"\btest\s*modu\w*|\bbakım\s+modu\w*|\btestläge\b|\btestmodus\b|\bтестов\w+\s+режим\w*|"
    r"\bрежим\w*\s+(?:тест\w*|отладк\w*)|テストモード|테스트\s*모드|وضع\s+الاختبار",
)
_ADDRESS_MORE = (
    r"\b(?:till|voor|para|pour|für|dla|для|untuk|cho)\s+(?:(?:de|het|a|o|la|le|die|den|das|l')\s*)?"
    r"(?:ai|ki|ia|ии|yz)(?:[-\s]\w+)?\s*[:,]",
    r"(?:ai|ии|인공지능)[^\n:：]{0,12}(?:에게|께|へ)\s*[:：]",
)

STRONG_CUES: dict[str, re.Pattern[str]] = {
    "override_instructions": _rx(*_OVERRIDE_EN, *_OVERRIDE_INTL, *_OVERRIDE_MORE),
    "role_tokens": _rx(*_ROLE_TOKENS, _ROLE_MORE[0]),
    "role_play": _rx(*_ROLE_PLAY, _ROLE_MORE[1]),
    "prompt_exfiltration": _rx(*_EXFILTRATE),
    "tool_call_markup": _rx(*_TOOL_CALL),
    "explicit_address": _rx(*_EXPLICIT_ADDRESS, *_ADDRESS_MORE),
}
WEAK_CUES: dict[str, re.Pattern[str]] = {
    "addressed_to_model": _rx(*_ADDRESSEE, *_ADDRESSEE_MORE),
    "suppress_findings": _rx(*_SUPPRESS, *_SUPPRESS_MORE),
    "claimed_authority": _rx(*_AUTHORITY),
    "claimed_mode": _rx(*_MODE, *_MODE_MORE),
    "fake_answer_or_tool": _rx(*_FAKE_ANSWER, *_DATA_VERDICT),
    "task_reset": _rx(*_RESET),
    "output_directive": _rx(*_OUTPUT_DIRECTIVE, *_OUTPUT_MORE),
    "data_boundary": _rx(*_DATA_BOUNDARY, *_DATA_BOUNDARY_MORE),
    "pressure": _rx(*_PRESSURE),
    "claimed_result": _rx(*_CLAIMED_RESULT, *_VERIFIED_CLAIM),
    "claimed_no_findings": _rx(*_NO_FINDINGS, *_NO_FINDINGS_MORE),
}
MODEL_CUE = "classifier"  # the classifier's verdict, when no rule decided
CUE_NAMES: tuple[str, ...] = (*STRONG_CUES, *WEAK_CUES, MODEL_CUE)
